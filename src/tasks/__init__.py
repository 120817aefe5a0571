"""Task registry: every stage reaches a task through `get_task(name)` or `task_of(cfg)` and its
interface (src/tasks/base.py); see docs/architecture.md."""
from src.config import ConfigError
from src.config_schema import TOP_LEVEL
from src.runtime.checkpoint import model_config
from src.tasks.counting import CountingTask
from src.tasks.enhancement import EnhancementTask
from src.tasks.separation import SeparationTask

TASKS = {task.name: task for task in (SeparationTask, EnhancementTask, CountingTask)}


def get_task(name):
    """A new instance of the task called `name`."""
    if name not in TASKS:
        raise ConfigError(f"unknown task '{name}' (known: {', '.join(TASKS)})")
    return TASKS[name]()


def task_of(cfg):
    """The task of a config (the schema's default task for None or a stored config without one)."""
    default = TOP_LEVEL["task"].default
    return get_task(default if cfg is None else cfg.get("task", default))


def all_tasks():
    """An instance of every task (e.g. to recognise any task's output file names)."""
    return [task() for task in TASKS.values()]


def load_counter(path, configs, threshold_db=None):
    """The checkpoint `path` as the speaker counter of separators with `configs` ({C: config}): a
    counting model, or a separation model whose active outputs count (threshold_db: None = its
    own counting.threshold_db)."""
    return task_of(model_config(path)).load_counter(path, configs, threshold_db)
