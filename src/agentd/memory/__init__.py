"""Agent memory: core memory blocks (:mod:`agentd.memory.blocks`) and the agent's tools
for them (:mod:`agentd.memory.tools`). Nothing is imported here, so that the tool
registry can import the tools without the runtime."""
