"""Generation providers: one small interface (`base.ImageProvider`), one class per provider, loaded lazily.

Each App registers `default_providers()` in its own `iat.plugins.LazyRegistry`, so a provider's module (and any
vendor SDK it needs) is imported only when a run first asks for it.
"""

from __future__ import annotations


def default_providers() -> dict[str, str]:
    """Provider code -> "module:Class" of every built-in provider."""
    return {"preview": "iat.providers.preview:PreviewProvider",
            "openai": "iat.providers.openai_images:OpenAIImagesProvider",
            "comfyui": "iat.providers.comfyui:ComfyUIProvider",
            "a1111": "iat.providers.a1111:A1111Provider",
            "removebg": "iat.providers.removebg:RemoveBgProvider",
            "photoroom": "iat.providers.photoroom:PhotoRoomProvider",
            "llm": "iat.providers.llm:ChatProvider",
            "agent_api": "iat.providers.agent_api:AgentApiProvider",
            "openai_audio": "iat.providers.openai_audio:OpenAIAudioProvider"}
