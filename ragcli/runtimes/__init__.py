"""Runtimes: everything that loads model weights. The embedder (ONNX), the GGUF generator
(llama.cpp) and the protocol every generator follows, the OpenAI-compatible client, LoRA training."""
