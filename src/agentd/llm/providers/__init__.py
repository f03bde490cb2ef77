"""Model providers; each module maps one wire format to the neutral types in ``agentd.llm``."""
