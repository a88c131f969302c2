"""Bridges from LLM SDKs and agent frameworks to runengine agents, each behind an extra:
`runengine.integrations.openai` (`runengine[openai]`), `runengine.integrations.pydantic_ai`
(`runengine[pydantic-ai]`). See docs/integrations.md."""
