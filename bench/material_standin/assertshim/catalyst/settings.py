"""For the CI's ``IS_QUANTIZATION_AVAILABLE`` probe: the quantize step is not part of the cases."""
IS_QUANTIZATION_AVAILABLE = False
