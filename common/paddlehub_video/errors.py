"""The typed errors of paddlehub_video; each message names the file or URL and the reason."""


class PaddleHubVideoError(Exception):
    """Base class of every error raised by paddlehub_video."""


class VideoDecodeError(PaddleHubVideoError):
    """A video could not be opened or holds no decodable video frame."""

    def __init__(self, path: str, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


class AssetError(PaddleHubVideoError):
    """A model asset (weights, labels) could not be fetched, verified or read."""


class WeightsError(AssetError):
    """A weights file lacks expected parameters or holds them with the wrong shape or dtype."""


class ConfigError(PaddleHubVideoError, ValueError):
    """A module configuration the module cannot run with (e.g. a value its network fixes)."""


class DeviceError(PaddleHubVideoError):
    """The requested device (e.g. a GPU) is not available in this Paddle build or machine."""
