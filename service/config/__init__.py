"""Settings: one typed object built once from the environment (see :mod:`service.config.sections`)."""

from service.config.environment import load_settings, setting_variables
from service.config.sections import (
    AuthSettings,
    CacheSettings,
    OpenAISettings,
    ParseSettings,
    ProviderSettings,
    RagSettings,
    RateLimitSettings,
    RedisSettings,
    Secret,
    ServerSettings,
    Settings,
    SettingsError,
    StorageSettings,
    TelemetrySettings,
)

__all__ = [
    "AuthSettings",
    "CacheSettings",
    "OpenAISettings",
    "ParseSettings",
    "ProviderSettings",
    "RagSettings",
    "RateLimitSettings",
    "RedisSettings",
    "Secret",
    "ServerSettings",
    "Settings",
    "SettingsError",
    "StorageSettings",
    "TelemetrySettings",
    "load_settings",
    "setting_variables",
]
