"""Spectrogram pictures of a mixture and its separated speakers, or of a noisy input and its
enhanced version, and training curves (matplotlib, Agg, no display)."""
import numpy as np

FFT_SIZE = 256
MAX_COLUMNS = 4000      # time columns drawn; longer inputs use a larger hop (memory stays bounded)
DYNAMIC_RANGE_DB = 80.0


def spectrogram_db(signal, sample_rate):
    """Magnitude spectrogram in dB of `signal (time,)` -> (`(freqs, frames)` dB, freqs Hz, times s).

    Hann window of FFT_SIZE samples (the whole signal if shorter), hop half a window, or larger
    so that there are at most MAX_COLUMNS frames (a long input is drawn from evenly spaced frames)."""
    signal = np.asarray(signal, dtype=np.float32)
    size = max(1, min(FFT_SIZE, len(signal)))
    hop = max(1, size // 2, -(-len(signal) // MAX_COLUMNS))
    starts = np.arange(0, max(len(signal) - size, 0) + 1, hop)
    frames = np.zeros((len(starts), size), dtype=np.float32)
    for row, start in enumerate(starts):
        chunk = signal[start:start + size]
        frames[row, :len(chunk)] = chunk
    magnitude = np.abs(np.fft.rfft(frames * np.hanning(size).astype(np.float32), axis=1)).T
    freqs = np.fft.rfftfreq(size, 1.0 / sample_rate)
    times = (starts + size / 2) / sample_rate
    return 20.0 * np.log10(magnitude + 1e-10), freqs, times


def plot_separation(mixture, estimates, sample_rate, path, labels, title=None):
    """Write a PNG with the spectrogram of `mixture (time,)` above those of `estimates (C, time)`,
    on one colour scale (the loudest bin of all down to DYNAMIC_RANGE_DB below it). Panels are
    titled by `labels` (the mixture's, then one per estimate: the task's plot_labels). Returns path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = list(zip(labels, [mixture, *estimates]))
    spectra = [spectrogram_db(signal, sample_rate) for _, signal in panels]
    top = max(float(s[0].max()) for s in spectra)
    duration = len(mixture) / sample_rate
    figure = Figure(figsize=(10, 2.2 * len(panels) + 0.6), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    image = None
    for ax, (name, _), (spec, freqs, _) in zip(axes, panels, spectra):
        image = ax.imshow(spec, origin="lower", aspect="auto", cmap="magma", vmin=top - DYNAMIC_RANGE_DB, vmax=top,
                          extent=(0.0, duration, 0.0, freqs[-1] / 1000.0), interpolation="nearest")
        ax.set_ylabel("kHz")
        ax.set_title(name, loc="left", fontsize=10)
    axes[-1].set_xlabel("time (s)")
    if title:
        figure.suptitle(title, fontsize=11)
    figure.colorbar(image, ax=list(axes), label="dB", fraction=0.03, pad=0.01)
    figure.savefig(path)
    return path


def plot_training_curves(runs, path, title="validation SI-SNRi"):
    """Write a PNG of validation SI-SNRi (dB) against training steps for each run.

    runs: {label: (steps per epoch, history records as in history.json, each with "epoch",
    "valid_si_snri" and "train_time" in s)}. The legend gives each run's training hours."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label, (steps_per_epoch, history) in runs.items():
        scored = [h for h in history if "valid_si_snri" in h]
        hours = sum(h["train_time"] for h in history) / 3600
        ax.plot([h["epoch"] * steps_per_epoch for h in scored], [h["valid_si_snri"] for h in scored],
                marker=".", label=f"{label} ({hours:.1f} h)")
    ax.axhline(0.0, color="grey", linewidth=0.5)
    ax.set_xlabel("training steps")
    ax.set_ylabel("SI-SNRi (dB)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
