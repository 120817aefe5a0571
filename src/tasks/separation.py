"""Speech separation (SWave): data, loss and validation wiring for the shared trainer."""
import logging

import numpy as np

from src.data.dataset import create_train_dataset, iterate_utterances
from src.data.mixing import SpeechMixer, load_speakers
from src.inference.network import NetworkSeparator
from src.losses import SeparationLoss
from src.metrics import MetricError, score_utterance
from src.models import build_model
from src.runtime.device import all_reduce_sum

log = logging.getLogger("gdprnn")


def combine_means(sums, counts, info):
    """Means over the items of all workers -> (float64 `(n,)`: sums `(n,)` summed over workers / counts
    summed over workers, 0 where no worker had an item; that total count). `info`: RunInfo (None = one worker)."""
    totals = np.concatenate([np.asarray(sums, np.float64).reshape(-1), [float(counts)]])
    if info is not None and info.distributed:
        totals = all_reduce_sum(totals)
    return totals[:-1] / max(totals[-1], 1.0), int(totals[-1])


class SeparationTask:
    name = "separation"

    def build_network(self, cfg):
        return build_model(cfg)

    def build_loss(self, cfg):
        return SeparationLoss()

    def train_batches(self, cfg, epoch, num_shards=1, shard_id=0):
        """Numpy batches `(mix (B,T), src (B,C,T), lengths (B,))` of this worker for `epoch`: mixed on
        the fly from `data.train_speech` (`data.steps_per_epoch` batches) when it is set, otherwise
        from the MindRecord split `data.train`."""
        segment = int(round(cfg.segment * cfg.sample_rate))
        if cfg.data.train_speech:
            speech = str(cfg.data.train_speech)
            mixer = SpeechMixer(load_speakers(speech, cfg.sample_rate), cfg.model.C, segment,
                                cfg.data.dm_gain_db, cfg.seed, where=speech)
            return mixer.epoch_batches(epoch, cfg.data.steps_per_epoch, cfg.train.batch_size, num_shards, shard_id)
        dataset = create_train_dataset(
            cfg.data.train, segment_samples=segment,
            batch_size=cfg.train.batch_size // num_shards, seed=cfg.seed, epoch=epoch,
            num_speakers=cfg.model.C, num_shards=num_shards, shard_id=shard_id,
            dynamic_mixing=cfg.data.get("dynamic_mixing", False), dm_gain_db=cfg.data.get("dm_gain_db", 2.5),
            num_workers=cfg.data.get("num_workers", 1), sample_rate=cfg.sample_rate)
        return dataset.create_tuple_iterator(output_numpy=True, num_epochs=1)

    def validate(self, net, cfg, info=None):
        """Mean SI-SNRi and SDRi (dB) over full validation utterances; score = SI-SNRi. Utterances that
        cannot be scored (e.g. a silent source) are skipped and named in the log, as evaluate.py does."""
        separator = NetworkSeparator(net)
        limit = int(cfg.train.get("valid_max_utterances", 0) or 0)
        rank, size = (info.rank, info.group_size) if info is not None else (0, 1)
        sums, count = np.zeros(2), 0
        for i, utt in enumerate(iterate_utterances(cfg.data.valid, cfg.sample_rate, cfg.model.C)):
            if limit and i >= limit:
                break
            if i % size != rank:
                continue
            est = separator(utt["mix"][None])[0]
            try:
                scores = score_utterance(est, utt["src"], utt["mix"], cfg.sample_rate)
            except MetricError as err:
                log.warning(f"validation: {utt['key']} skipped ({err})")
                continue
            sums += (scores["si_snri"], scores["sdri"])
            count += 1
        (si_snri, sdri), scored = combine_means(sums, count, info)
        if not scored:
            raise MetricError(f"{cfg.data.valid}: no validation utterance could be scored")
        return {"score": float(si_snri), "si_snri": float(si_snri), "sdri": float(sdri)}
