"""inference/sampling.py: samples as extra rows of the same batches; samples=1 is the plain
evaluation bit for bit; views are mapped back; latent noise changes nothing but the latent,
for every arch; an ensemble of one checkpoint is that checkpoint."""
import os

import numpy as np
import pytest
import torch

from inference.evaluation import evaluate
from inference.sampling import SamplingConfig, check_views, expand, latent_noise, open_codec, run_samples
from inference.segments import RunOptions, run_segments
from tasks import get_codec
from test_compile import ARCHS, build, make_batch


@pytest.fixture(scope="module")
def evaluation(trained_hrm):
    from inference.evaluation import load_evaluation
    from utils.distributed import init_distributed
    ck, _ = trained_hrm
    step = max(int(p.name.split("_")[1]) for p in ck.glob("step_*") if p.name.split("_")[1].isdigit())
    return load_evaluation(str(ck / f"step_{step}"), init_distributed())


def test_one_sample_is_the_plain_evaluation_bit_for_bit(evaluation, tmp_path):
    from utils.outputs import load_outputs
    ev = evaluation
    plain = ev.run(save_outputs=["inputs", "labels", "preds", "q_halt_logits"], output_dir=str(tmp_path), use_evaluators=False)
    saved = load_outputs(str(tmp_path), ev.opened.step)
    loader, metadata = ev.loader("test", None)
    codec = open_codec(ev.opened)
    (tmp_path / "sampled").mkdir()
    metrics = evaluate(ev.model, loader, metadata, save_outputs=["labels", "preds", "q_halt_logits"], output_dir=str(tmp_path / "sampled"),
                       step=ev.opened.step, sampling=SamplingConfig(samples=1), codec=codec)
    outputs = load_outputs(str(tmp_path / "sampled"), ev.opened.step)
    np.testing.assert_array_equal(outputs["preds"], saved["preds"])
    np.testing.assert_array_equal(outputs["q_halt_logits"], saved["q_halt_logits"])
    assert metrics["all"]["exact_accuracy"] == plain["all"]["exact_accuracy"]
    assert metrics["all"]["accuracy"] == pytest.approx(plain["all"]["accuracy"], abs=1e-6)  # float32 sums there
    assert metrics["all"]["samples"] == 1 and metrics["all"]["forward_segments"] == ev.default_halt_max_steps
    # An ensemble of one checkpoint is that checkpoint, at any number of samples.
    config = SamplingConfig(samples=4, sampling="both", noise_std=0.2, seed=3)
    one = evaluate(ev.model, loader, metadata, sampling=config, codec=codec)
    again = evaluate(ev.model, loader, metadata, sampling=config, codec=codec)
    assert one == again  # reproducible from its seed


def test_views_run_as_rows_and_map_back(evaluation):
    ev = evaluation
    codec = open_codec(ev.opened)
    loader, _ = ev.loader("test", None)
    _, batch, _ = next(iter(loader))
    config = SamplingConfig(samples=5)
    samples = run_samples([ev.model], batch, codec, config)
    assert samples.answers.shape == (len(batch["inputs"]), 5, batch["inputs"].shape[1])
    # Sample 0 is the plain pass; sample k is the model run on view k alone, mapped back.
    views = codec.views(batch["inputs"].numpy(), 5, seed=0)
    with torch.inference_mode():
        for k in (0, 3):
            shown = dict(batch, inputs=torch.from_numpy(views.forward(batch["inputs"].numpy())[:, k]))
            _, _, out = run_segments(ev.model, shown, {"preds"})
            back = views.back(np.repeat(out["preds"].numpy()[:, None], 5, axis=1))[:, k]
            np.testing.assert_array_equal(samples.answers[:, k], back)
            np.testing.assert_array_equal(samples.view_inputs[:, k], shown["inputs"].numpy())
    # Chunks of whole examples give the same answers as one pass.
    chunked = run_samples([ev.model], batch, codec, config, max_rows=7)
    np.testing.assert_array_equal(chunked.answers, samples.answers)
    # Other batch shapes round the float32 forward differently (~1e-6 of the logits' scale); a
    # relative bound per element would not hold for a logit near 0, so the bound is 1e-4 of the scale.
    scale = np.abs(samples.q_halt_logits).max()
    np.testing.assert_allclose(chunked.q_halt_logits, samples.q_halt_logits, rtol=0, atol=1e-4 * scale)
    # More samples than rows per pass: one example at a time, its samples over several passes.
    split = run_samples([ev.model, ev.model], batch, codec, config, max_rows=2)
    np.testing.assert_array_equal(split.answers, np.concatenate([samples.answers] * 2, axis=1))
    np.testing.assert_array_equal(split.view_inputs[:, :5], samples.view_inputs)
    np.testing.assert_allclose(split.q_halt_logits[:, 5:], samples.q_halt_logits, rtol=0, atol=1e-4 * scale)
    # Traces come back per sample, mapped back, ending in the answer.
    traced = run_samples([ev.model], batch, codec, config, RunOptions(trace=True, steps=True))
    np.testing.assert_array_equal(traced.trace[:, :, -1], samples.answers)
    assert traced.trace.shape[2] == ev.default_halt_max_steps and traced.steps.shape == (len(batch["inputs"]), 5)


def test_tasks_without_symmetries_ask_for_noise():
    codec = get_codec("domino")(seq_len=72)
    with pytest.raises(ValueError, match="declares no symmetries.*sampling=noise"):
        check_views(codec, SamplingConfig(samples=4))
    check_views(codec, SamplingConfig(samples=4, sampling="noise"))
    check_views(codec, SamplingConfig(samples=1))


@pytest.mark.parametrize("arch", ARCHS)
def test_latent_noise_changes_only_the_latent_for_every_arch(arch):
    torch.manual_seed(0)
    model = build(arch).eval()
    with torch.no_grad():
        model.model.inner.q_head.weight.normal_()  # initialised to zero: make the halting head read the latent
    batch = make_batch(0)
    seen = []
    # A forward hook sees the arguments the inner model ran with (after the noise pre-hook).
    record = model.model.inner.register_forward_hook(lambda m, args, out: seen.append((args[0], dict(args[1]))))
    config = SamplingConfig(samples=3, sampling="noise", noise_std=0.5)
    with torch.inference_mode():
        plain = run_samples([model], batch, None, SamplingConfig(samples=3, sampling="noise", noise_std=0.0))
        clean_seen, seen[:] = list(seen), []
        noisy = run_samples([model], batch, None, config)
    record.remove()
    # The model saw the same inputs and identifiers; its latents differed on samples 1.. only.
    for (carry0, data0), (carry1, data1) in zip(clean_seen, seen):
        for key in data0:
            assert torch.equal(data0[key], data1[key])
        for name in vars(carry0):
            z0, z1 = getattr(carry0, name).view(4, 3, -1), getattr(carry1, name).view(4, 3, -1)
            assert torch.equal(z0[:, 0], z1[:, 0]) and not torch.equal(z0[:, 1:], z1[:, 1:])
    np.testing.assert_array_equal(noisy.answers[:, 0], plain.answers[:, 0])
    assert not np.array_equal(noisy.q_halt_logits, plain.q_halt_logits)
    np.testing.assert_array_equal(plain.answers[:, 1], plain.answers[:, 0])  # no noise: identical samples
    # The hook is gone afterwards: a plain pass is unchanged.
    with torch.inference_mode():
        _, _, out = run_segments(model, expand(batch, None, 3), {"preds"})
    np.testing.assert_array_equal(out["preds"].numpy().reshape(4, 3, -1), plain.answers)


def test_latent_noise_hook_is_removed_on_errors():
    model = build("trm").eval()
    with pytest.raises(RuntimeError, match="boom"):
        with latent_noise(model, 1.0, torch.ones(4, dtype=torch.bool), torch.Generator()):
            raise RuntimeError("boom")
    assert not model.model.inner._forward_pre_hooks


# ---- the entry points: evaluate.py, predict.py, scripts/analyze_checkpoint.py


def last_step(ck):
    return str(ck / f"step_{max(int(p.name.split('_')[1]) for p in ck.glob('step_*') if p.name.split('_')[1].isdigit())}")


def test_evaluate_samples_and_ensembles(trained_hrm, tmp_path):
    import json

    import evaluate
    ck = last_step(trained_hrm[0])
    run = lambda **kw: evaluate.run(evaluate.EvalConfig(output_dir=str(tmp_path / "out"), **kw))["all"]  # noqa: E731
    four = run(checkpoint=ck, samples=4, save_outputs=["preds", "labels", "agreement"])
    assert four["samples"] == 4 and four["forward_segments"] == 4 * four["segments"]
    written = json.loads((tmp_path / "out" / f"{os.path.basename(ck)}_sampling.json").read_text())
    assert written["metrics"]["all"] == four and written["settings"]["samples"] == 4
    saved = torch.load(tmp_path / "out" / f"{os.path.basename(ck)}_all_preds.0", weights_only=True)
    assert set(saved) == {"preds", "labels", "agreement"}
    assert four["exact_accuracy_vote@1"] == run(checkpoint=ck)["exact_accuracy"]  # sample 0 is the plain pass
    # An ensemble of one checkpoint is that checkpoint; two copies of it vote the same answers twice.
    assert run(checkpoint=[ck], samples=4) == four
    twice = run(checkpoint=[ck, ck], samples=4)
    assert twice["samples"] == 8 and twice["exact_accuracy"] == four["exact_accuracy"]


def test_evaluate_sampling_errors_are_one_line(trained_hrm, capsys):
    import evaluate
    ck = last_step(trained_hrm[0])
    for argv, message in [([f"checkpoint={ck}", "samples=0"], "samples"),
                          ([f"checkpoint={ck}", "samples=2", "select=best"], "select"),
                          ([f"checkpoint={ck}", "samples=2", "sampling=views"], "sampling")]:
        with pytest.raises(SystemExit) as e:
            evaluate.main(argv)
        assert e.value.code == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and message in err and "\n" not in err


def test_predict_samples(trained_hrm, sudoku4, tmp_path):
    from conftest import load_split
    from inference.predictor import PredictError, describe, load_predictor
    p = load_predictor(last_step(trained_hrm[0]), device="cpu")
    puzzles = [p.codec.format_tokens(x) for x in load_split(sudoku4, "test")["inputs"][:2]]
    plain = p.predict(puzzles, progress=False)
    one = p.run_rows([r for q in p._as_puzzles(puzzles) for r in p.codec.rows(q)], None, SamplingConfig(samples=1),
                        progress=False)[0]
    for result, out in zip(plain, one):
        # the sampled path with one sample is the plain one
        assert result.get("raw_answer", result["answer"]) == p.codec.answer(None, out.preds[-1])
    scaled = p.predict(puzzles, samples=6, trace=True, progress=False)
    for result in scaled:
        assert result["samples"] == 6 and 0 <= result["chosen_sample"] < 6 and 0 < result["agreement"] <= 1
        assert result["trace"][-1]["answer"] == result["answer"] and len(result["trace"]) == result["segments_run"]
        assert "samples agree" in describe(result)
    panels = p.picture_panels()
    assert panels[0][0].title.startswith(f"input; steps of sample {scaled[0]['chosen_sample'] + 1}/6")
    assert len(panels[0]) == 1 + scaled[0]["segments_run"]  # the input, then every segment of the chosen sample
    from tasks.pictures import save_picture
    save_picture(str(tmp_path / "steps.png"), panels)
    assert (tmp_path / "steps.png").stat().st_size > 1000
    assert p.predict(puzzles, samples=6, progress=False) == p.predict(puzzles, samples=6, progress=False)  # seeded
    noisy = p.predict(puzzles, samples=3, sampling="noise", noise_std=0.5, select="q_halt", progress=False)
    assert [r["samples"] for r in noisy] == [3, 3]
    with pytest.raises(PredictError, match="select"):
        p.predict(puzzles, samples=2, select="best")


@pytest.mark.slow
def test_samples_split_across_ranks_like_examples(trained_hrm, tmp_path):
    import json

    import evaluate
    from conftest import REPO, torchrun
    ck = last_step(trained_hrm[0])
    one = evaluate.run(evaluate.EvalConfig(checkpoint=ck, samples=4, output_dir=str(tmp_path / "one")))["all"]
    out = torchrun("--nproc-per-node", "2", str(REPO / "evaluate.py"), f"checkpoint={ck}", "samples=4",
                   f"output_dir={tmp_path / 'two'}", "save_outputs=[preds]").stdout
    two = json.loads(out[out.index("{"):])["all"]
    assert two == pytest.approx(one, rel=1e-6)
    halves = [torch.load(tmp_path / "two" / f"{os.path.basename(ck)}_all_preds.{r}", weights_only=True)["preds"] for r in (0, 1)]
    assert [len(h) for h in halves] == [8, 8]


def test_benchmark_sampling_reports_views_per_second(trained_hrm, capsys):
    from scripts import benchmark_sampling
    results = benchmark_sampling.benchmark(benchmark_sampling.BenchmarkConfig(checkpoint=last_step(trained_hrm[0]), samples=[1, 4]))
    assert [r["samples"] for r in results] == [1, 4] and all(r["views_per_second"] > 0 for r in results)
    assert results[1]["forward_segments"] == 4 * results[0]["forward_segments"]
    assert '"views_per_second"' in capsys.readouterr().out


def test_an_ensemble_of_two_tasks_is_refused_and_options_are_bounded(trained_hrm, tmp_path, capsys):
    """A Sudoku model and a custom-task model of the same sizes are not pooled (evaluate.py and
    predict.py alike); samples and noise_std have bounds; each is one line, exit status 2."""
    import yaml

    import evaluate
    import predict
    from conftest import build_custom, untrained_checkpoint
    ck = last_step(trained_hrm[0])
    run_config = yaml.safe_load((trained_hrm[0] / "all_config.yaml").read_text())
    data = build_custom(tmp_path, [{"input": "abcd" * 4, "output": "dcba" * 4}])  # seq_len 16, vocabulary 6: as 4x4 Sudoku
    other = untrained_checkpoint(run_config, data, tmp_path / "custom")
    cases = [(evaluate.main, [f"checkpoint=[{ck},{other}]", f"output_dir={tmp_path / 'out'}"],
              f"checkpoint={other}: trained on custom puzzles, but {ck} on sudoku; an ensemble needs runs on the same data"),
             (predict.main, [f"checkpoint=[{ck},{other}]", "puzzle=1..4..1..3..4..."], "this checkpoint was trained on custom puzzles"),
             (evaluate.main, [f"checkpoint={ck}", "samples=1000000"], "samples=1000000: expected 1 to 4096"),
             (evaluate.main, [f"checkpoint={ck}", "samples=2", "sampling=noise", "noise_std=inf"], "noise_std=inf: expected a finite"),
             (predict.main, [f"checkpoint={ck}", "puzzle=1..4..1..3..4...", "noise_std=1e308"], "noise_std=1e+308: expected a finite"),
             # a custom task built without --augment has no views: N identical samples otherwise
             (evaluate.main, [f"checkpoint={other}", "samples=4", f"output_dir={tmp_path / 'out'}"], "built without --augment"),
             (predict.main, [f"checkpoint={other}", "puzzle=abcd", "samples=4"], "sampling=augment: this custom task's dataset "
              "was built without --augment: it records no symmetries to draw views from; use sampling=noise")]
    for main, argv, message in cases:
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        # predict.py says what it runs before it runs it: the error is its last line
        assert e.value.code == 2 and len(err) <= 2 and err[-1].startswith("error:") and message in err[-1], (argv, err)
    assert not (tmp_path / "out").exists()


def test_sampling_options_without_effect_are_named():
    from inference.sampling import SamplingOptions
    assert SamplingOptions().unused_options() == []
    assert SamplingOptions(noise_std=0.3, select="q_halt").unused_options() == [
        "note: noise_std=, select= have no effect with samples=1 (one plain pass)"]
    assert SamplingOptions(samples=4, noise_std=0.3).unused_options() == [
        "note: noise_std= has no effect with sampling=augment (noise is added with sampling=noise or both)"]
    assert SamplingOptions(samples=4, sampling="both", noise_std=0.3).unused_options() == []
    assert SamplingOptions(select="q_halt").unused_options(checkpoints=2) == []  # an ensemble chooses among checkpoints


# ---- ARC through the same engine: the dataset's versions as views, the ARC vote on the chosen answers

def arc_evaluation(ck):
    from inference.evaluation import load_evaluation
    from utils.distributed import init_distributed
    return load_evaluation(str(ck), init_distributed())


def arc_vote(data, metadata, outputs, save_path):
    """A fresh ARC evaluator's metrics and submission for saved ``outputs`` (inputs, identifiers, preds, q_halt_logits)."""
    import json

    from evaluators.arc import ARC
    voter = ARC(data_path=str(data), eval_metadata=metadata)
    voter.update_batch({k: torch.as_tensor(outputs[k]) for k in ("inputs", "puzzle_identifiers")},
                       {k: torch.as_tensor(outputs[k]) for k in ("preds", "q_halt_logits")})
    metrics = voter.result(str(save_path), rank=0, world_size=1)
    return metrics, json.loads((save_path / "submission.json").read_text())


def test_arc_samples_are_voted_on_by_the_arc_evaluator(arc_tiny, tmp_path):
    """samples=N on ARC (5x5 grids, canvas 6x6): the chosen answer of every version of a test input
    goes to the ARC evaluator, whose pass@K and submission.json are those of the saved chosen
    answers; one sample through the sampled path gives the plain pass's answers, pass@K and submission."""
    import json

    from utils.outputs import load_outputs
    data, ck = arc_tiny["2d"]
    ev = arc_evaluation(ck)
    loader, metadata = ev.loader("test", None)
    keys = ["inputs", "puzzle_identifiers", "preds", "q_halt_logits"]
    plain = ev.run(save_outputs=keys, output_dir=str(tmp_path / "plain"))
    sampled = ev.run(sampling=SamplingConfig(samples=4), save_outputs=keys + ["sample_preds"], output_dir=str(tmp_path / "sampled"))
    assert sampled["all"]["samples"] == 4 and sampled["all"]["forward_segments"] == 8
    arc_keys = {k for k in plain if k.startswith("ARC/pass@")}
    assert {"ARC/pass@1", "ARC/pass@2"} <= arc_keys == {k for k in sampled if k.startswith("ARC/")}
    assert json.loads((tmp_path / "sampled" / "step_1_sampling.json").read_text())["metrics"] == sampled
    chosen = load_outputs(str(tmp_path / "sampled"), 1)
    assert chosen["sample_preds"].shape == (len(chosen["preds"]), 4, 36)
    metrics, submission = arc_vote(data, metadata, chosen, tmp_path / "again")
    assert metrics == {k: sampled[k] for k in arc_keys}
    assert submission == json.loads((tmp_path / "sampled" / "evaluator_ARC_step_1" / "submission.json").read_text())

    # samples=1 through the sampled path: the plain pass's answers, votes and submission.
    from evaluators.arc import ARC
    (tmp_path / "one").mkdir()
    one = evaluate(ev.model, loader, metadata, [ARC(data_path=str(data), eval_metadata=metadata)], save_outputs=keys,
                   output_dir=str(tmp_path / "one"), step=1, sampling=SamplingConfig(samples=1), codec=open_codec(ev.opened))
    saved_plain, saved_one = load_outputs(str(tmp_path / "plain"), 1), load_outputs(str(tmp_path / "one"), 1)
    for k in keys:
        np.testing.assert_array_equal(saved_one[k], saved_plain[k])
    assert {k: one[k] for k in arc_keys} == {k: plain[k] for k in arc_keys}
    assert (json.loads((tmp_path / "one" / "evaluator_ARC_step_1" / "submission.json").read_text())
            == json.loads((tmp_path / "plain" / "evaluator_ARC_step_1" / "submission.json").read_text()))


def test_arc_samples_from_the_command_line_on_a_one_row_canvas(arc_tiny, tmp_path, capsys):
    import json

    import evaluate
    _, ck = arc_tiny["1d"]
    evaluate.main([f"checkpoint={ck}", "samples=3", "select=q_halt", f"output_dir={tmp_path}"])
    out = capsys.readouterr().out
    metrics = json.loads(out[out.index("{"):])
    assert metrics["all"]["samples"] == 3 and 0 <= metrics["ARC/pass@2"] <= 1
    submission = json.loads((tmp_path / "evaluator_ARC_step_1" / "submission.json").read_text())
    assert sorted(submission) == ["1d_flip", "1d_recolour", "1d_shift"]
    assert all(len(grid) <= 2 and len(grid[0]) <= 13 for attempts in submission.values() for test in attempts
               for grid in test.values())  # read off the 2x13 canvas


def test_arc_ensembles_pool_runs_on_the_same_dataset_only(arc_tiny, tmp_path, capsys):
    """Two ARC checkpoints of one dataset: each runs every sample (its own answers, as alone) and the
    ARC vote scores the pooled choice; a checkpoint of another dataset with the same canvas (other
    versions, so other puzzle identifiers) is refused in one line, in evaluate.py and predict.py."""
    import evaluate
    import predict
    from conftest import arc_run_config, arc_task_folder, build_arc, untrained_checkpoint
    from utils.outputs import load_outputs
    data, ck = arc_tiny["2d"]
    second = untrained_checkpoint(arc_run_config(data), data, tmp_path / "second", seed=1)

    def run(checkpoint, folder):
        metrics = evaluate.run(evaluate.EvalConfig(checkpoint=checkpoint, samples=2, output_dir=str(tmp_path / folder),
                                                   save_outputs=["sample_preds"]))
        return metrics, load_outputs(str(tmp_path / folder), 1)["sample_preds"]

    pooled, pooled_preds = run([str(ck), str(second)], "pooled")
    assert pooled["all"]["samples"] == 4 and "ARC/pass@2" in pooled
    for i, alone in enumerate((ck, second)):
        np.testing.assert_array_equal(pooled_preds[:, 2 * i: 2 * i + 2], run(str(alone), f"alone{i}")[1])
    assert not np.array_equal(pooled_preds[:, :2], pooled_preds[:, 2:])  # two models, two sets of answers

    other_data = build_arc(arc_task_folder(tmp_path / "raw", "2d"), tmp_path / "other", num_aug=1)
    other = untrained_checkpoint(arc_run_config(other_data), other_data, tmp_path / "other_ck")
    message = f"checkpoint={other}: its dataset's puzzle identifiers (identifiers.json) name other puzzles than those of {ck}"
    capsys.readouterr()
    for main, argv in ((evaluate.main, [f"checkpoint=[{ck},{other}]", "samples=2", f"output_dir={tmp_path / 'refused'}"]),
                       (predict.main, [f"checkpoint=[{ck},{other}]", f"puzzle_file={data / 'test_puzzles.json'}", "samples=2"])):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert e.value.code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "refused").exists()
