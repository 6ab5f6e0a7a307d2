"""Installs the perceiver_jax package (dependencies: requirements.txt)."""

import setuptools

setuptools.setup(
    name='perceiver_jax',
    version='0.1.0',
    description=('Perceiver: General Perception with Iterative Attention, '
                 'in JAX and Haiku.'),
    packages=setuptools.find_packages(include=['perceiver_jax*']),
    python_requires='>=3.11',
)
