"""OMG-LLaVA family: the official release (InternLM2-Chat-7B + OMG-Seg) run through our stack."""
