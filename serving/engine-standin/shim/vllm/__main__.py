"""`python -m vllm serve MODEL ...` -> the vLLM STAND-IN (not vLLM)."""
import sys

from vllm_standin import main

if __name__ == "__main__":
    sys.exit(main())
