"""Task registry: what the shared trainer, evaluator and exporter need to know per task.

A task provides build_network(cfg), build_loss(cfg), train_batches(cfg, epoch, num_shards, shard_id)
and validate(net, cfg, info) -> dict with "score" (higher is better); see docs/architecture.md.
"""
import importlib

TASKS = {
    "separation": "src.tasks.separation:SeparationTask",
    "enhancement": "src.tasks.enhancement:EnhancementTask",
}


def get_task(name):
    """Instantiate the task called `name` (imported on first use)."""
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}' (known: {', '.join(TASKS)})")
    module, cls = TASKS[name].split(":")
    return getattr(importlib.import_module(module), cls)()
