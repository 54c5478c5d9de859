"""Stand-in package: lets `python -m vllm.entrypoints.openai.api_server` start the vLLM STAND-IN."""
