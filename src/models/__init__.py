"""Model registry: `build_model(cfg)` -> nn.Cell, chosen by `cfg.model.name`."""
from src.config import ConfigError
from src.models.countnet import CountNet
from src.models.rtransformer import build_rtransformer
from src.models.swave import SWave


def _build_swave(cfg):
    m = cfg.model
    return SWave(m.N, m.L, m.H, m.R, m.C, cfg.sample_rate, cfg.segment, input_normalize=m.input_normalize,
                 recompute=m.recompute, lstm=m.lstm, input_rms=m.input_rms)


def _build_countnet(cfg):
    m = cfg.model
    return CountNet(m.n_mels, m.channels, len(m.speaker_counts), m.dropout)


MODELS = {
    "swave": _build_swave,
    "rtransformer": build_rtransformer,
    "countnet": _build_countnet,
}


def build_model(cfg):
    """Build the network named by `cfg.model.name` from `cfg.model` (and top-level
    `sample_rate` / `segment`) of a checked config (`check_config`: defaults filled in)."""
    name = cfg.model.get("name")
    if name not in MODELS:
        raise ConfigError(f"model.name={name!r} is not a known model (known: {', '.join(sorted(MODELS))})")
    try:
        return MODELS[name](cfg)
    except (KeyError, AttributeError) as err:
        raise ConfigError(f"model '{name}': missing config key {err}") from None
