"""mcugen: int8 TFLite models to plain, bit-exact C for Cortex-M microcontrollers."""

__version__ = "0.1.0"
