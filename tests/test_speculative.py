"""The speculative executor: accounting of every mode, warm-start shifts, plan extension alignment, correctors in
the loop, history windows, batching; corrector data collection and its Parquet files."""
from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch

from gym_qwen.platform.speculative.executor import SpeculativeExecutor
from gym_qwen.platform.speculative.modes import SpeculationSettings
from gym_qwen.platform.tdmpc2.planner import warm_start

pytestmark = pytest.mark.usefixtures("single_thread")
OBS, ACT = 5, 2


class LineEnv:
    """A deterministic toy environment of `length` decisions: obs drifts with the actions, reward = -|obs|."""

    def __init__(self, length: int = 11):
        self.length = length

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)
        self.t = 0
        self.obs = self.rng.normal(size=OBS).astype(np.float32)
        return self.obs.copy(), {}

    def step(self, action):
        self.t += 1
        self.obs = (0.9 * self.obs + 0.3 * np.resize(action, OBS)).astype(np.float32)
        return self.obs.copy(), -float(np.abs(self.obs).sum()), False, self.t >= self.length, {}

    def render(self):
        return np.zeros((4, 4, 3), np.uint8)

    def close(self):
        pass


@pytest.fixture(scope="module")
def agent():
    from gym_qwen.platform.config import TrainConfig, parse_config
    from gym_qwen.platform.tdmpc2.agent import TDMPC2Agent

    cfg = parse_config(TrainConfig, ["latent_dim=16", "enc_dim=16", "mlp_dim=16", "num_samples=16", "num_elites=4",
                                     "num_pi_trajs=2", "iterations=2", "horizon=3", "device=cpu"])
    torch.manual_seed(0)
    return TDMPC2Agent(cfg, OBS, ACT, episode_length=11, episodic=False, device="cpu")


def play(agent, settings, length=11, corrector=None, teacher=False, seed=3, batch_lengths=None, on_step=None):
    from gym_qwen.platform.speculative.episodes import play_episodes

    lengths = batch_lengths or [length]
    ex = SpeculativeExecutor(agent, settings, batch=len(lengths), corrector=corrector, teacher=teacher,
                             on_step=on_step)
    before = agent.planner.calls
    torch.manual_seed(seed)
    records = play_episodes(ex, [LineEnv(n) for n in lengths], [seed + i for i in range(len(lengths))])
    return records, agent.planner.calls - before, ex


def test_warm_start_shifts_each_row_by_its_own_steps():
    prev = torch.arange(1, 4, dtype=torch.float32).view(1, 3, 1).repeat(4, 1, 1)  # rows of [1, 2, 3]
    out = warm_start(prev, torch.tensor([1, 2, 3, 7]), 4, 3, 1, "cpu").squeeze(-1)
    assert out.tolist() == [[2, 3, 0], [3, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert warm_start(prev, 1, 4, 3, 1, "cpu").squeeze(-1)[0].tolist() == [2, 3, 0]  # the old shift-by-one
    nan = torch.full((1, 3, 1), float("nan"))
    assert warm_start(nan, 1, 1, 3, 1, "cpu").abs().sum() == 0


@pytest.mark.parametrize("k", [1, 2, 3, 4, 6])
def test_naive_plans_once_per_chunk(agent, k):
    (rec,), counted, _ = play(agent, SpeculationSettings("naive", k), length=11)
    assert rec["planner_calls"] == math.ceil(11 / k) == counted
    assert rec["encoder_calls"] == math.ceil(11 / k)  # open loop: nothing is encoded between plans
    assert rec["speculative_steps"] == 11 - math.ceil(11 / k)
    assert rec["extensions"] == (math.ceil(11 / k) if k > 3 else 0)


def test_baseline_plans_every_step_and_equals_the_agents_own_acting(agent):
    (rec,), counted, _ = play(agent, SpeculationSettings("baseline", 1), length=11)
    assert rec["planner_calls"] == counted == rec["encoder_calls"] == 11
    env = LineEnv(11)
    obs, _ = env.reset(seed=3)
    torch.manual_seed(3)
    agent.reset_plans()
    total, done, t = 0.0, False, 0
    while not done:
        obs, r, term, trunc, _ = env.step(agent.act(obs, t0=t == 0, eval_mode=True))
        total, done, t = total + r, term or trunc, t + 1
    assert rec["return"] == total


def test_adaptive_threshold_zero_is_baseline_and_infinity_is_naive(agent):
    (base,), _, _ = play(agent, SpeculationSettings("baseline", 1))
    (zero,), calls, _ = play(agent, SpeculationSettings("adaptive", 3, mismatch_threshold=0.0))
    assert zero["return"] == base["return"] and zero["planner_calls"] == calls == 11
    assert zero["misses"] == 10 and zero["speculative_steps"] == 0  # every verification after a plan misses
    (naive,), _, _ = play(agent, SpeculationSettings("naive", 3))
    (inf,), calls, _ = play(agent, SpeculationSettings("adaptive", 3, mismatch_threshold=float("inf")))
    assert inf["return"] == naive["return"] and inf["planner_calls"] == calls == 4 and inf["misses"] == 0
    assert inf["encoder_calls"] == 11  # adaptive looks at every step


def test_a_miss_costs_exactly_one_planner_call(agent):
    # a threshold in the middle of the mismatches seen open loop: some steps accepted, some missed
    seen = []
    play(agent, SpeculationSettings("adaptive", 4, mismatch_threshold=float("inf")), length=30,
         on_step=lambda r: seen.append(r["distance"]))
    threshold = float(np.median(seen))
    steps = []
    (rec,), counted, _ = play(agent, SpeculationSettings("adaptive", 4, mismatch_threshold=threshold), length=30,
                              on_step=lambda r: steps.append((r["t"], r["step_in_chunk"])))
    assert rec["planner_calls"] == counted  # the planner's own tally (the shadow teacher of on_step is not in it)
    assert rec["misses"] > 0 and rec["speculative_steps"] > 0
    # every chunk is the episode's first, or follows a miss, or follows a chunk that ran all k = 4 steps (before
    # the episode's last decision, t = 29)
    exhausted = sum(1 for t, j in steps if j == 3 and t < 29)
    assert rec["planner_calls"] == 1 + rec["misses"] + exhausted
    assert max(j for _, j in steps) <= 3


def test_warm_start_shift_is_the_number_of_steps_executed(agent, monkeypatch):
    shifts = []
    plan = agent.planner.plan
    monkeypatch.setattr(agent.planner, "plan", lambda z, prev_mean=None, shift=1: (
        shifts.append(torch.as_tensor(shift).tolist()), plan(z, prev_mean, shift))[1])
    play(agent, SpeculationSettings("naive", 2), length=6)
    assert shifts[1:] == [[2], [2]]  # each new plan is two steps after the last one


def test_extended_chunks_keep_latent_j_with_action_j(agent):
    ex = SpeculativeExecutor(agent, SpeculationSettings("naive", 6))
    ex.reset()
    with torch.inference_mode():
        ex.act(np.ones((1, OBS), np.float32))
        z, a = ex.chunk_latents[0], ex.chunk_actions[0]
        assert torch.allclose(z[0], agent.model.encode(torch.ones(1, OBS))[0])
        for j in range(1, 6):  # latent j is where action j is taken: the dynamics of (latent j-1, action j-1)
            expected = agent.model.next(z[j - 1:j], a[j - 1:j])[0]
            assert torch.allclose(z[j], expected, atol=1e-5), j
    assert ex.stats[0].counts["extensions"] == 1


class ShiftCorrector(torch.nn.Module):
    """Adds a fixed offset: a corrector whose effect is known."""

    def __init__(self, offset):
        super().__init__()
        self.offset = offset
        self.calls = 0

    def forward(self, z_real, z_pred, a_plan, history, mask):
        self.calls += z_real.shape[0]
        assert mask[:, -1].all()  # the current step's feature is always the last, real position
        return a_plan + self.offset


def test_identity_corrector_equals_naive_and_is_counted(agent):
    from gym_qwen.platform.speculative.correctors import build_corrector

    identity = build_corrector("two_tower", 16, ACT, history_len=4).eval()
    (naive,), _, _ = play(agent, SpeculationSettings("naive", 3))
    (spec,), _, _ = play(agent, SpeculationSettings("spec_corrector", 3), corrector=identity)
    assert spec["return"] == naive["return"] and spec["planner_calls"] == naive["planner_calls"]
    assert spec["corrector_calls"] == spec["speculative_steps"] == 11 - 4
    shifted = ShiftCorrector(5.0)  # pushed out of bounds: clamped to 1
    records, _, ex = play(agent, SpeculationSettings("spec_corrector", 3), corrector=shifted)
    assert shifted.calls == records[0]["corrector_calls"] == 7


class RecordingEnv(LineEnv):
    """LineEnv that keeps every action it was sent."""

    def step(self, action):
        self.sent.append(np.array(action, dtype=np.float64))
        return super().step(action)

    def reset(self, seed=None):
        self.sent = []
        return super().reset(seed)


def test_the_corrector_output_is_what_the_environment_receives(agent):
    """Within the first chunk the plan is the same with and without a corrector (same seed, same first
    observation), so at its speculative steps the environment must get exactly the plan's action plus the
    corrector's offset (kept inside [-1, 1]); an executor that dropped the corrector's output fails here."""
    from gym_qwen.platform.speculative.episodes import play_episodes

    sent = {}
    for name, corrector in (("naive", None), ("shifted", ShiftCorrector(0.25))):
        mode = "naive" if corrector is None else "spec_corrector"
        ex = SpeculativeExecutor(agent, SpeculationSettings(mode, 3), corrector=corrector)
        env = RecordingEnv(11)
        torch.manual_seed(3)
        play_episodes(ex, [env], [3])
        sent[name] = env.sent
    assert np.array_equal(sent["shifted"][0], sent["naive"][0])  # the planned step itself is not corrected
    for j in (1, 2):
        expected = np.clip(sent["naive"][j] + 0.25, -1, 1)
        assert np.allclose(sent["shifted"][j], expected, atol=1e-6), j
        assert not np.allclose(sent["shifted"][j], sent["naive"][j])


def test_prior_mode_never_plans_and_counts_one_encoder_and_one_policy_call_per_step(agent):
    (rec,), counted, _ = play(agent, SpeculationSettings("prior", 1), length=11)
    assert rec["planner_calls"] == counted == 0
    assert rec["encoder_calls"] == rec["policy_calls"] == rec["length"] == 11
    assert rec["corrector_calls"] == rec["extensions"] == rec["speculative_steps"] == 0
    env = RecordingEnv(11)  # the action is the prior's mean at the encoded observation
    ex = SpeculativeExecutor(agent, SpeculationSettings("prior", 1))
    from gym_qwen.platform.speculative.episodes import play_episodes

    play_episodes(ex, [env], [5])
    obs, _ = LineEnv(11).reset(seed=5)
    with torch.inference_mode():
        mean = agent.model.pi(agent.model.encode(torch.as_tensor(obs)[None]))[1]["mean"][0].numpy()
    assert np.allclose(env.sent[0], mean, atol=1e-6)
    with pytest.raises(ValueError, match="spec_exec_horizon must be 1"):
        SpeculationSettings("prior", 3)


def test_one_step_mismatch_is_the_distance_to_the_dynamics_of_the_last_real_latent_and_action(agent):
    """mismatch=one_step: at a speculative step the real latent is compared with f(z_prev, a_prev), computed here
    by hand from the observations and actions the environment saw."""
    from gym_qwen.platform.speculative.features import latent_distance

    ex = SpeculativeExecutor(agent, SpeculationSettings("adaptive", 3, mismatch_threshold=float("inf"),
                                                        mismatch="one_step"))
    seen = []
    real = ex._mismatch
    ex._mismatch = lambda rows, row_t, spec, z, z_pred: seen.append(real(rows, row_t, spec, z, z_pred)) or seen[-1]
    env = RecordingEnv(5)
    obs, _ = env.reset(seed=2)
    ex.reset()
    torch.manual_seed(0)
    observations = [obs]
    for t in range(4):
        obs, *_ = env.step(ex.act(obs[None], t=t)[0])
        observations.append(obs)
    with torch.inference_mode():
        z = agent.model.encode(torch.as_tensor(np.stack(observations[:4])))
        a = torch.as_tensor(np.stack(env.sent[:3]), dtype=torch.float32)
        by_hand = latent_distance(z[1:3], agent.model.next(z[0:2], a[0:2]))
    # act t=1 and t=2 are the speculative steps of the first chunk (t=3 starts the next one)
    assert torch.allclose(seen[1][0], by_hand[0], atol=1e-5) and torch.allclose(seen[2][0], by_hand[1], atol=1e-5)
    plain = SpeculativeExecutor(agent, SpeculationSettings("adaptive", 3, mismatch_threshold=float("inf")))
    plain.reset()
    with torch.inference_mode():
        plain.act(observations[0][None])
        open_loop = latent_distance(z[1:2], plain.chunk_latents[0, 1:2])
    assert not torch.allclose(open_loop, by_hand[0:1])  # the two kinds differ: the test can tell them apart


def test_measuring_the_teacher_changes_no_return_and_no_count(agent):
    (plain,), counted, _ = play(agent, SpeculationSettings("naive", 3))
    (shadowed,), counted2, ex = play(agent, SpeculationSettings("naive", 3), teacher=True)
    assert shadowed["return"] == plain["return"] and counted == counted2 == plain["planner_calls"]
    assert {k: shadowed[k] for k in ("planner_calls", "encoder_calls")} == {"planner_calls": 4, "encoder_calls": 11}
    assert shadowed["teacher_steps"] == 7 and shadowed["teacher_sq_error"] > 0


def test_batched_rows_keep_their_own_chunks_and_counts(agent):
    lengths = [11, 7, 4]
    records, counted, ex = play(agent, SpeculationSettings("naive", 3), batch_lengths=lengths)
    assert [r["length"] for r in records] == lengths
    assert [r["planner_calls"] for r in records] == [math.ceil(n / 3) for n in lengths]
    assert counted == sum(math.ceil(n / 3) for n in lengths)
    records, counted, _ = play(agent, SpeculationSettings("baseline", 1), batch_lengths=lengths)
    assert [r["planner_calls"] for r in records] == lengths


def test_history_windows_cross_chunks_but_not_episodes(agent):
    rows = []
    ex = SpeculativeExecutor(agent, SpeculationSettings("naive", 3, history_len=4), on_step=rows.append)
    from gym_qwen.platform.speculative.episodes import play_episodes

    torch.manual_seed(0)
    play_episodes(ex, [LineEnv(8)], [1])
    # decision t has min(t + 1, 4) real features; the last one is the current step's [z_real, z_pred, dz, a_plan]
    assert [r["history_valid"] for r in rows] == [min(r["t"] + 1, 4) for r in rows]
    for r in rows:
        L = 16
        last = r["history"][-1]
        assert np.allclose(last[:L], r["z_real"]) and np.allclose(last[L:2 * L], r["z_pred"])
        assert np.allclose(last[3 * L:], r["a_plan"])
        assert np.all(r["history"][:4 - r["history_valid"]] == 0)
    first_rows = len(rows)
    play_episodes(ex, [LineEnv(8)], [2])  # a new episode starts with an empty window
    assert rows[first_rows]["history_valid"] == rows[first_rows]["t"] + 1 == 2


# ---------------------------------------------------------------- corrector data
def _collect_table(agent, k=3, length=11, min_distance=0.0, index=0):
    from gym_qwen.platform.speculative.collection import collect_episode_rows, data_schema

    schema = data_schema(16, ACT, 4, {"task": "line", "teacher_sha256": "ab" * 32})
    return collect_episode_rows(agent, LineEnv(length), 5, index, k, 4, min_distance, schema)


def test_collection_records_every_speculative_step_with_the_teachers_action(agent):
    table, record = _collect_table(agent, k=3, length=11)
    assert table.num_rows == 11 - math.ceil(11 / 3) == record["speculative_steps"]
    assert table["step_in_chunk"].to_pylist() == [1, 2] * 3 + [1]
    assert record["planner_calls"] == 4  # the teacher's calls are not the executor's
    assert not any(table["extended"].to_pylist())
    table6, _ = _collect_table(agent, k=6, length=12)
    assert table6["step_in_chunk"].to_pylist() == [1, 2, 3, 4, 5] * 2
    assert table6["extended"].to_pylist() == [False, False, True, True, True] * 2


def test_parquet_round_trip_filters_cap_and_metadata(agent, tmp_path):
    from gym_qwen.platform.speculative.corrector_data import ShardedParquetWriter, read_corrector_data

    tables = [_collect_table(agent, index=i)[0] for i in range(3)]
    writer = ShardedParquetWriter(tmp_path / "d.parquet", tables[0].schema)
    writer.start()
    for i in (2, 0, 1):  # episodes finish out of order
        writer.write_episode(i, tables[i])
    assert writer.finish(max_rows=12) == 12
    cols, meta = read_corrector_data(tmp_path / "d.parquet", latent_dim=16)
    assert meta["task"] == "line" and meta["latent_dim"] == 16 and meta["history_len"] == 4
    assert cols["episode"].tolist() == [0] * 7 + [1] * 5
    assert cols["history"].shape == (12, 4, 3 * 16 + ACT) and cols["history_mask"].shape == (12, 4)
    assert np.allclose(cols["z_real"][:7], np.stack(tables[0]["z_real"].to_pylist()))
    assert not (tmp_path / "d.parquet.parts").exists()
    far, _ = _collect_table(agent, min_distance=1e9)
    assert far.num_rows == 0


def test_resuming_a_finished_collection_collects_only_what_it_lacks(agent, tmp_path):
    """resume=true on a merged output (no shards left) splits it back into episode shards: complete, nothing is
    collected again and the merge is the same file's rows; cut at its cap, the last (cut) episode is collected
    again; an empty episode counts as done; another provenance is refused in one line and the output is kept."""
    import pyarrow.parquet as pq

    from gym_qwen.platform.speculative.collection import collect_episode_rows, data_schema
    from gym_qwen.platform.speculative.corrector_data import CorrectorDataError, ShardedParquetWriter

    def made(cap, **meta):
        schema = data_schema(16, ACT, 4, {"task": "line", "teacher_sha256": "ab" * 32, "episodes": 4,
                                          "max_samples": cap, **meta})
        tables = [collect_episode_rows(agent, LineEnv(11), 5, i, 3, 4, 1e9 if i == 3 else 0.0, schema)[0]
                  for i in range(4)]
        return schema, tables

    schema, tables = made(-1)
    assert tables[3].num_rows == 0  # min_distance keeps nothing of episode 3
    out = tmp_path / "d.parquet"
    writer = ShardedParquetWriter(out, schema)
    writer.start()
    for i, table in enumerate(tables):
        writer.write_episode(i, table)
    rows = writer.finish()
    merged = pq.read_table(out)
    again = ShardedParquetWriter(out, schema)
    assert again.start(resume=True) == {0, 1, 2, 3} and again.rows == rows
    assert again.finish() == rows and pq.read_table(out).equals(merged)
    with pytest.raises(CorrectorDataError, match="cannot resume .* to 3 episodes: it holds 4"):
        ShardedParquetWriter(out, schema).start(resume=True, episodes=3)
    assert pq.read_table(out).equals(merged) and not (tmp_path / "d.parquet.parts").exists()
    capped_schema, _ = made(9)
    capped = ShardedParquetWriter(out, capped_schema)
    capped.start()
    for i, table in enumerate(tables[:2]):
        capped.write_episode(i, table.cast(capped_schema))
    assert capped.finish(max_rows=9) == 9  # episode 0 whole (7 rows), episode 1 cut at 2 of its 7
    assert ShardedParquetWriter(out, capped_schema).start(resume=True) == {0}
    shutil.rmtree(tmp_path / "d.parquet.parts")
    other, _ = made(9, teacher_sha256="cd" * 32)
    with pytest.raises(CorrectorDataError, match=r"cannot resume .*d.parquet: its rows were collected with "
                                                 r"teacher_sha256=abab"):
        ShardedParquetWriter(out, other).start(resume=True)
    assert pq.read_table(out).num_rows == 9 and not (tmp_path / "d.parquet.parts").exists()


def test_bad_corrector_data_files_say_one_line(agent, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from gym_qwen.platform.speculative.corrector_data import (CorrectorDataError, ShardedParquetWriter,
                                                              read_corrector_data)

    table, _ = _collect_table(agent)
    writer = ShardedParquetWriter(tmp_path / "good.parquet", table.schema)
    writer.start()
    writer.write_episode(0, table)
    writer.finish()
    data = (tmp_path / "good.parquet").read_bytes()
    (tmp_path / "cut.parquet").write_bytes(data[: len(data) // 2])
    pq.write_table(pa.table({"x": [1, 2]}), tmp_path / "foreign.parquet")
    (tmp_path / "text.parquet").write_text("hello")
    cases = {"missing.parquet": "not found", "cut.parquet": "cannot read", "foreign.parquet": "not Gym Qwen",
             "text.parquet": "cannot read"}
    for name, fragment in cases.items():
        with pytest.raises(CorrectorDataError, match=fragment) as e:
            read_corrector_data(tmp_path / name)
        assert "\n" not in str(e.value)
    with pytest.raises(CorrectorDataError, match="latents of size 16"):
        read_corrector_data(tmp_path / "good.parquet", latent_dim=128)


def test_threshold_calibration_on_known_chunks():
    from gym_qwen.platform.speculative.calibration import choose_threshold, estimated_calls_per_step

    # two chunks of k = 4: mismatches grow along each
    cols = {"episode": np.array([0, 0, 0, 0, 0, 0]), "t": np.array([1, 2, 3, 5, 6, 7]),
            "step_in_chunk": np.array([1, 2, 3, 1, 2, 3]), "distance": np.array([.1, .2, .9, .3, .4, .5])}
    from gym_qwen.platform.speculative.calibration import chunk_mismatches

    chunks = chunk_mismatches(cols, 4)
    assert estimated_calls_per_step(chunks, 0.0, 4) == 1.0  # every step misses: a plan per step
    assert estimated_calls_per_step(chunks, 0.25, 4) == 2 / 4  # 3 steps + 1 step
    assert estimated_calls_per_step(chunks, 1.0, 4) == 2 / 8  # both chunks run all 4 steps
    assert choose_threshold(cols, 4, 0.5) == (0.2, 0.5)
    with pytest.raises(ValueError):
        choose_threshold(cols, 4, 0.1)


def test_writer_resumes_from_matching_shards_and_refuses_foreign_ones(agent, tmp_path):
    from gym_qwen.platform.speculative.collection import data_schema
    from gym_qwen.platform.speculative.corrector_data import CorrectorDataError, ShardedParquetWriter

    table, _ = _collect_table(agent)
    writer = ShardedParquetWriter(tmp_path / "d.parquet", table.schema)
    assert writer.start() == set()
    writer.write_episode(0, table)
    writer.write_episode(3, table)
    writer.abort(keep_shards=True)  # interrupted
    again = ShardedParquetWriter(tmp_path / "d.parquet", table.schema)
    assert again.start(resume=True) == {0, 3} and again.rows == 2 * table.num_rows
    assert again.finish(episodes=2) == table.num_rows  # episode 3 is past the episodes asked for now
    writer.start()
    writer.write_episode(0, table)
    other = data_schema(16, ACT, 4, {"task": "line", "teacher_sha256": "cd" * 32})
    with pytest.raises(CorrectorDataError, match="teacher_sha256"):
        ShardedParquetWriter(tmp_path / "d.parquet", other).start(resume=True)


def test_adaptive_falling_back_to_the_prior_plans_once_per_k_steps_and_counts_the_prior(agent):
    """fallback=prior: a miss hands the rest of the chunk to the policy prior, so at threshold 0 (every verified
    step misses) chunks of k = 3 over 11 steps are: plan, miss -> prior, prior; ... worked out by hand."""
    (rec,), calls, _ = play(agent, SpeculationSettings("adaptive", 3, mismatch_threshold=0.0, fallback="prior"))
    assert rec["planner_calls"] == calls == 4  # t = 0, 3, 6, 9: like naive, never a replan on a miss
    assert rec["misses"] == 4  # t = 1, 4, 7, 10: the first verified step of each chunk
    assert rec["policy_calls"] == 11 - 4 and rec["speculative_steps"] == 0
    (naive,), _, _ = play(agent, SpeculationSettings("naive", 3))
    (trusting,), calls, _ = play(agent, SpeculationSettings("adaptive", 3, mismatch_threshold=float("inf"),
                                                            fallback="prior"))
    assert trusting["return"] == naive["return"] and trusting["planner_calls"] == calls == 4
    assert trusting["policy_calls"] == trusting["misses"] == 0
    with pytest.raises(ValueError, match="unknown fallback"):
        SpeculationSettings("adaptive", 3, fallback="replan")
