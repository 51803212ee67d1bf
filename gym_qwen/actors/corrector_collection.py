"""Corrector data collection spread over episode-farm actors (each holds the teacher; rows stream to the driver's
writer episode by episode, and the farm keeps none of them)."""
from __future__ import annotations

import ray

from .cluster import connect, disconnect
from .episode_farm import EpisodeFarm


def collect_with_actors(ckpt: dict, episodes: list[int], setup_args: tuple, *, num_workers: int, cpus: float,
                        ray_address: str | None, max_rows: int | None, on_episode) -> None:
    """Collection episodes `episodes` (indices) on `num_workers` actors; `on_episode(index, table)` once each."""
    from gym_qwen.platform.speculative.collection import collection_episode, collection_setup

    connected = connect(ray_address)
    try:
        farm = EpisodeFarm(collection_setup, collection_episode, max(1, min(num_workers, len(episodes))), cpus=cpus,
                           setup_args=(ray.put(ckpt), *setup_args), max_records=max_rows, what="collector")
        try:
            farm.run(episodes, on_episode=on_episode, keep=False)
        finally:
            farm.close()
    finally:
        disconnect(connected)
