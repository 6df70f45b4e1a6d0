"""The shared blocks (template.py): clear errors on bad input, the Minari path, and that every algorithm file
carries the blocks word for word."""
import os
import re

import numpy as np
import pytest

from conftest import ALGOS, ROOT
from template import Logger, evaluate, load_demos, load_policy, make_env

DATA = os.path.join(ROOT, "data")


def shared_blocks(path):
    text = open(path).read()
    return dict(re.findall(r"# ---- shared: (\w+) ----\n(.*?)# ---- end shared ----", text, re.S))


def test_algorithm_files_carry_the_shared_blocks_verbatim():
    ref = shared_blocks(os.path.join(ROOT, "template.py"))
    assert set(ref) == {"make_env", "load_demos", "load_policy", "evaluate", "logger"}
    for algo in ALGOS:
        path = os.path.join(ROOT, f"{algo}.py")
        if not os.path.exists(path):
            continue
        blocks = shared_blocks(path)
        for name, body in blocks.items():
            assert body == ref[name], f"{algo}.py's shared block {name!r} differs from template.py"
        assert "make_env" in blocks and "evaluate" in blocks and "logger" in blocks, algo


def test_load_demos_ok():
    env = make_env("Hopper-v4", 0)()
    d = load_demos(os.path.join(DATA, "Hopper-v4-medium.npz"), env)
    assert d["observations"].shape[1] == 11 and d["actions"].shape[1] == 3 and d["rewards"].ndim == 1


def test_load_demos_missing_file_says_how_to_make_it():
    env = make_env("Hopper-v4", 0)()
    with pytest.raises(SystemExit, match=r"nope\.npz not found: make it with `python data/make_data.py"):
        load_demos("nope.npz", env)


def test_load_demos_wrong_env_names_both_shapes():
    env = make_env("Walker2d-v4", 0)()
    with pytest.raises(SystemExit, match=r"observations of shape \(11,\).*actions of shape \(3,\).*env has \(17,\) and \(6,\)"):
        load_demos(os.path.join(DATA, "Hopper-v4-medium.npz"), env)


def test_unknown_env_id_is_one_sentence():
    with pytest.raises(SystemExit, match="Unknown env id 'Hoper-v4'"):
        make_env("Hoper-v4", 0)()
    with pytest.raises(SystemExit, match="Unknown env id 'metaworld/nothing-v3'"):
        make_env("metaworld/nothing-v3", 0)()


@pytest.mark.parametrize("limit", [None, 7])
def test_metaworld_time_limit_ends_with_episode_statistics(limit):
    """A shorter --episode-steps on MetaWorld truncates at that step and still reports info["episode"] (a limit
    outside MetaWorld's episode statistics once crashed conrft.py's first truncated episode)."""
    env = make_env("metaworld/reach-v3", 0, limit)()
    env.reset(seed=0)
    steps, term, trunc = 0, False, False
    while not (term or trunc) and steps < 600:
        _, _, term, trunc, info = env.step(np.zeros(env.action_space.shape, dtype=np.float32))
        steps += 1
    assert (steps, trunc) == (limit or 500, True) and info["episode"]["l"] == steps


def test_missing_policy_file():
    with pytest.raises(SystemExit, match="Policy file x.npz not found"):
        load_policy("x.npz")


def test_minari_path(tmp_path, monkeypatch):
    minari = pytest.importorskip("minari")
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    env = make_env("Hopper-v4", 0)()
    rng = np.random.default_rng(0)
    buffers = []
    for i, T in enumerate((5, 7)):
        buffers.append(EpisodeBuffer(id=i, observations=list(rng.normal(size=(T + 1, 11))), actions=list(rng.uniform(-1, 1, (T, 3))),
                                     rewards=list(rng.normal(size=T)), terminations=[False] * (T - 1) + [True],
                                     truncations=[False] * T))
    minari.create_dataset_from_buffers(dataset_id="test/hopper-tiny-v0", buffer=buffers, env=env.unwrapped.spec.id,
                                       algorithm_name="random", observation_space=env.observation_space,
                                       action_space=env.action_space)
    d = load_demos("minari:test/hopper-tiny-v0", env)
    assert d["observations"].shape == (12, 11) and d["next_observations"].shape == (12, 11)
    assert d["actions"].shape == (12, 3) and d["terminations"].sum() == 2
    assert np.allclose(d["next_observations"][0], d["observations"][1])


def test_evaluate_metaworld_success_flag():
    import metaworld.policies as P

    pol = P.SawyerReachV3Policy()
    ret, succ = evaluate(lambda o: np.clip(pol.get_action(o), -1, 1), "metaworld/reach-v3", episodes=2, seed=0)
    assert succ == 1.0 and ret > 0
    ret, succ = evaluate(lambda o: np.zeros(4, np.float32), "metaworld/reach-v3", episodes=1, seed=0)
    assert succ == 0.0


@pytest.mark.parametrize("env_id", ["Hopper-v4", "metaworld/reach-v3"])
def test_evaluate_max_steps_caps_every_episode(env_id):
    """max_steps N: each evaluation episode ends by step N (ConRFT's --episode-steps); None: the env's own limit."""
    calls, zeros = [], np.zeros(make_env(env_id, 0)().action_space.shape, np.float32)
    act = lambda obs: (calls.append(1), zeros)[1]  # noqa: E731
    evaluate(act, env_id, 2, 0, max_steps=4)
    assert len(calls) == 8  # neither env ends sooner with zero actions
    calls.clear()
    evaluate(act, env_id, 1, 0)
    assert len(calls) > 4


def test_logger_writes_csv_and_stops_on_nan(in_tmp):
    class A:
        lr = 1.0
    log = Logger("t", A())
    log.log(1, **{"losses/bc": 0.5, "eval/return": 3.0})
    with pytest.raises(SystemExit, match="losses/bc became nan at step 2"):
        log.log(2, **{"losses/bc": float("nan")})
    log.close()
    rows = open(in_tmp / "runs" / "t" / "metrics.csv").read().splitlines()
    assert rows[0] == "step,key,value" and rows[1] == "1,losses/bc,0.5"


# ---- bad demo files end in one sentence at load; files are made in tmp_path ----
def hopper_demos(n=10, **change):
    rng = np.random.default_rng(0)
    d = {"observations": rng.normal(size=(n, 11)), "actions": rng.uniform(-1, 1, (n, 3)), "rewards": rng.normal(size=n),
         "next_observations": rng.normal(size=(n, 11)), "terminations": np.eye(1, n, n - 1)[0], "truncations": np.zeros(n)}
    return {k: v for k, v in (d | change).items() if v is not None}


@pytest.mark.parametrize("change,message", [
    ({"rewards": None}, r"lacks the key\(s\) rewards \(it has observations, actions, next_observations, "),
    ({k: np.zeros((0, 11) if "obs" in k else (0, 3) if k == "actions" else 0) for k in
      ("observations", "actions", "rewards", "next_observations", "terminations", "truncations")},
     r"holds no transitions \(observations, actions, rewards, next_observations, terminations, truncations empty\)"),
    ({"rewards": np.zeros(9)}, r"holds keys of different lengths \(observations 10, actions 10, rewards 9, "),
    ({"observations": np.where(np.arange(10)[:, None] % 4 == 3, np.nan, np.zeros((10, 11)))},
     r"holds a non-finite value in observations at row 3 \(2 of 10 rows\)"),
    ({"rewards": np.r_[np.zeros(6), np.inf, np.zeros(3)]}, r"holds a non-finite value in rewards at row 6 \(1 of 10 rows\)"),
    ({"actions": np.r_[np.zeros((4, 3)), [[0.0, 1.5, 0.0]], np.zeros((5, 3))]},
     r"holds actions outside the env's bounds \[-1.0, 1.0\] \(first at row 4: \[0.0, 1.5, 0.0\]\)"),
    ({"terminations": np.zeros(10)}, r"marks no episode end \(terminations and truncations are all 0\)"),
    ({"truncations": np.r_[np.zeros(9), 2.0]}, r"holds truncations other than 0 and 1 \(row 9\)"),
    ({"actions": np.array([["a", "b", "c"]] * 10)}, r"holds actions of dtype <U1, not numbers: store every key as a number array"),
])
def test_load_demos_bad_file_is_one_sentence(tmp_path, change, message):
    path = tmp_path / "bad.npz"
    np.savez(path, **hopper_demos(**change))
    with pytest.raises(SystemExit, match=rf"^Demo file {re.escape(str(path))} {message}") as e:
        load_demos(str(path), make_env("Hopper-v4", 0)())
    assert "\n" not in str(e.value) and str(e.value).endswith(".")


def test_load_demos_accepts_actions_on_the_bound_and_flags_as_bools(tmp_path):
    path = tmp_path / "ok.npz"
    np.savez(path, **hopper_demos(actions=np.full((10, 3), 1.0005), truncations=np.zeros(10, bool)))
    d = load_demos(str(path), make_env("Hopper-v4", 0)())
    assert d["actions"].dtype == np.float32 and d["terminations"].sum() == 1


@pytest.mark.parametrize("content", [b"just some text\n", b"PK\x03\x04 broken zip", b""])
def test_load_demos_unreadable_file(tmp_path, content):
    path = tmp_path / "demos.npz"
    path.write_bytes(content)
    with pytest.raises(SystemExit, match=rf"^Demo file {re.escape(str(path))} is not a readable \.npz .*: make it with"):
        load_demos(str(path), make_env("Hopper-v4", 0)())
    np.save(tmp_path / "array.npy", np.zeros(3))  # an .npy, not an .npz
    with pytest.raises(SystemExit, match="is not a readable .npz"):
        load_demos(str(tmp_path / "array.npy"), make_env("Hopper-v4", 0)())


def test_minari_id_not_on_disk(tmp_path, monkeypatch):
    pytest.importorskip("minari")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    with pytest.raises(SystemExit, match=r"^Minari dataset minari:nobody/nothing-v0 is not on disk .*: download it "
                                         r"with `minari download nobody/nothing-v0`"):
        load_demos("minari:nobody/nothing-v0", make_env("Hopper-v4", 0)())
