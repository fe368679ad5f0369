"""What runs on top of a Segmenter: the benchmark (`bench`), accuracy (`evaluate`, `metrics`), video (`video`),
colour maps (`viz`) and Triton model repositories (`triton`)."""
