"""``critwin privacy`` and ``critwin fairness``: the diagnostics on the shipped models (digits, shapes) and on
text-to-image pipelines, prompt by prompt (:mod:`critwin.cli._prompts`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from critwin._display import format_ci
from critwin._io import atomic_write_json, json_text, output_marker
from critwin._lazy import deferred_import
from critwin._validation import check_number, check_positive_int, check_time, parse_seed
from critwin.cli import app
from critwin.cli._common import (
    EXECUTOR_HELP,
    RAY_ADDRESS_HELP,
    RAY_TIMEOUT_HELP,
    check_choice,
    check_counts,
    check_out_file,
    check_request_memory,
    executor_options,
    parse_list,
    parse_times,
    reject_unused,
)
from critwin.cli._prompts import is_prompt_model, prompt_fairness_command, prompt_privacy_command
from critwin.models._store import PIPELINE_MODELS, SHIPPED_MODELS, load_card
from critwin.models.data import NUM_CLASSES

# Imported where a diagnostic runs, after every option is checked (they import torch and the models).
fairness_lib = deferred_import("critwin.diagnostics.fairness", globals(), "fairness_lib")
privacy_lib = deferred_import("critwin.diagnostics.privacy", globals(), "privacy_lib")
classifier_lib = deferred_import("critwin.models.classifier", globals(), "classifier_lib")
judges_lib = deferred_import("critwin.models.judges", globals(), "judges_lib")

# The image models' membership audit (not the text models); text-to-image pipelines (shipped or a
# directory) audit prompts.
PRIVACY_MODELS = tuple(
    name for name in SHIPPED_MODELS if not name.startswith("rhm-") and name not in PIPELINE_MODELS
)


def _check_audit_sizes(model: str, members: int, nonmembers: int) -> None:
    """Members and non-members fit the model's split (read from its card: no weights are loaded).

    A shapes model's held-out images are drawn afresh (any number); its training set size is in its config.
    """
    card = load_card(model)
    if model.startswith("shapes"):
        n_train, n_test = card["config"]["n_train"], None
    else:
        n_train, n_test = card["data"]["n_train"], card["data"]["n_test"]
    if members > n_train:
        raise ValueError(f"--members must be <= {n_train} (the model's training set)")
    if n_test is not None and nonmembers > n_test:
        raise ValueError(f"--nonmembers must be <= {n_test} (the held-out set)")


def _audit_images(model: str, members: int, nonmembers: int):
    """``(process, member images, non-member images)`` of a shipped model."""
    # Deferred: the models import diffusers (seconds); options are checked before this is called.
    if model.startswith("shapes"):
        from critwin.models.shapes import load_shapes_model

        loaded = load_shapes_model(model)
        held_out = loaded.config.load_held_out(nonmembers).images
        return loaded, loaded.training_data().images[:members], held_out
    from critwin.models.digits import load_digits_model

    loaded = load_digits_model(model)
    data = loaded.training_data()
    return loaded, data.train_images[:members], data.test_images[:nonmembers]


@app.command()
def privacy(
    ctx: typer.Context,
    model: str = typer.Option(
        "digits-memorise",
        "--model",
        help=f"Shipped model ({', '.join(PRIVACY_MODELS)}) or a StableDiffusionPipeline directory.",
    ),
    members: str | None = typer.Option(
        None,
        "--members",
        help="Image models: training images audited as members (default 20). Text-to-image models: a text "
        "file of member prompts, one per line (default: the prompts the model card records).",
    ),
    nonmembers: int = typer.Option(
        40, "--nonmembers", help="Image models: held-out images (half calibrate the threshold)."
    ),
    non_members: str | None = typer.Option(
        None, "--non-members", help="Text-to-image models: a text file of held-out prompts, one per line."
    ),
    calibration: str | None = typer.Option(
        None,
        "--calibration",
        help="Text-to-image models: a text file of held-out prompts that only set the thresholds (default: "
        "the card's; with --non-members alone, half of those).",
    ),
    times: str = typer.Option(
        "0.05,0.3,0.8,1.5,2.5", "--times", help="Image models: comma-separated OU times."
    ),
    steps: int | None = typer.Option(None, "--steps", help="Sampler steps (default 20; text-to-image: 10)."),
    replicates: int = typer.Option(
        2, "--replicates", help="Image models: forward-reverse replicates per image and time."
    ),
    scores: str = typer.Option(
        "commitment,wen,loss,copying",
        "--scores",
        help="Text-to-image models: the scores to compare (commitment: critwin's window signal; wen: Wen et "
        "al. 2024; loss: SecMI/PIA-style denoising loss; copying: the ground truth).",
    ),
    generations: int = typer.Option(
        4, "--generations", help="Text-to-image: initial noises per prompt (Wen)."
    ),
    trajectories: int = typer.Option(
        2, "--trajectories", help="Text-to-image: generations per prompt of the commitment signal."
    ),
    clones: int = typer.Option(1, "--clones", help="Text-to-image: continuations per fork (commitment)."),
    guidance: float | None = typer.Option(
        None, "--guidance", help="Text-to-image: guidance scale (default: the card's, else 7.5)."
    ),
    commitment_guidance: float = typer.Option(
        1.0,
        "--commitment-guidance",
        help="Text-to-image: guidance scale of the commitment signal's generations (default 1, the "
        "conditional law: strong guidance makes every prompt's generations one image).",
    ),
    seed: str = typer.Option("0", "--seed"),
    out: Path | None = typer.Option(None, "--out", help="Write the audit as JSON to this file."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_timeout: float | None = typer.Option(None, "--ray-timeout", help=RAY_TIMEOUT_HELP),
    fpr: float | None = typer.Option(
        None,
        "--fpr",
        help="Target false-positive rate (default 0.05; text-to-image 0.01, raised to 1/N where N "
        "calibration prompts cannot resolve it).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress in a terminal."),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON object instead of a summary. Commitment times outside the measured range are "
        'censored: {"value": null, "censored": "above"} (kept at the largest time) or "below".',
    ),
) -> None:
    """Memorisation audits graded by membership itself: images (ROC-AUC of commitment times, members vs
    held-out non-members) or prompts of a text-to-image model (critwin's window signal beside Wen et al.,
    a SecMI/PIA-style loss and the copying ground truth: ROC-AUC and TPR at 1% FPR per duplication count,
    with score and Clopper-Pearson CIs and the NFEs each score spends per prompt)."""
    seed = parse_seed(seed)
    if fpr is not None and not 0 < fpr < 1:
        raise ValueError(f"--fpr must lie in (0, 1), got {fpr}")
    check_out_file(out, kind="privacy")
    if model not in PRIVACY_MODELS and not is_prompt_model(model):
        raise ValueError(
            f"--model must be one of {', '.join(PRIVACY_MODELS)}, a shipped text-to-image model "
            f"({', '.join(PIPELINE_MODELS)}) or a StableDiffusionPipeline directory, got {model!r}"
        )
    if is_prompt_model(model):
        image_only = "applies to the image models (digits, shapes)"
        reject_unused(
            ctx,
            {
                name: image_only
                for name in ("nonmembers", "times", "replicates", "executor", "ray_address", "ray_timeout")
            },
        )
        check_counts(steps=steps, generations=generations, trajectories=trajectories, clones=clones)
        if guidance is not None and not guidance >= 0:
            raise ValueError(f"--guidance must be a number >= 0, got {guidance}")
        check_request_memory(
            steps=(f"--steps {steps}", (steps or 0) + 1),
            generations=(f"--generations {generations} initial noises per prompt", generations or 0),
            trajectories=(
                f"--trajectories {trajectories} x --clones {clones} generations per prompt",
                (trajectories or 0) * (1 + (clones or 0)),
            ),
        )
        prompt_privacy_command(
            model,
            files={"members": members, "non_members": non_members, "calibration": calibration},
            options={
                "steps": steps,
                "guidance": guidance,
                "commitment_guidance": check_number(commitment_guidance, "--commitment-guidance", low=0),
                "scores": scores,
                "generations": generations,
                "trajectories": trajectories,
                "clones": clones,
                "fpr": 0.01 if fpr is None else fpr,
                "seed": seed,
            },
            out=out,
            as_json=as_json,
            progress=progress,
        )
        return
    prompt_only = "applies to text-to-image models"
    reject_unused(
        ctx,
        {
            name: prompt_only
            for name in (
                "non_members",
                "calibration",
                "scores",
                "generations",
                "trajectories",
                "clones",
                "guidance",
                "commitment_guidance",
            )
        },
    )
    _image_privacy(
        model,
        members,
        nonmembers,
        times,
        steps,
        replicates,
        seed,
        out,
        (executor, ray_address, ray_timeout),
        fpr,
        as_json,
    )


def _image_privacy(model, members, nonmembers, times, steps, replicates, seed, out, runs_on, fpr, as_json):
    """The membership audit of a shipped image model (digits, shapes)."""
    try:
        members = 20 if members is None else int(members)
    except ValueError:
        raise ValueError(
            f"--members must be a number of training images for {model}, got {members!r}"
        ) from None
    steps = 20 if steps is None else steps
    fpr = 0.05 if fpr is None else fpr
    requested_times = parse_times(times)
    check_counts(members=members, steps=steps, replicates=replicates)
    check_positive_int(nonmembers, "--nonmembers", minimum=2)
    check_request_memory(
        steps=(f"--steps {steps}", steps + 1),
        draws=(
            f"--replicates {replicates} x {members + nonmembers} images x {len(requested_times)} times",
            replicates * (members + nonmembers) * len(requested_times),
        ),
    )
    runs_on = executor_options(*runs_on)
    _check_audit_sizes(model, members, nonmembers)
    loaded, member_images, nonmember_images = _audit_images(model, members, nonmembers)
    audit = privacy_lib.membership_audit(
        loaded.process(num_inference_steps=steps),
        member_images,
        nonmember_images,
        requested_times,
        n_per_time=replicates,
        seed=seed,
        fpr=fpr,
        **runs_on,
    )
    report = {"model": model, **audit.to_dict(), **output_marker("privacy")}
    if out is not None:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json_text(report, indent=None))
        return
    op = audit.operating_point
    typer.echo(
        f"{model}: ROC-AUC {format_ci(audit.auc, *audit.auc_ci)} (95% CI); "
        f"TPR {format_ci(op['tpr'], *op['tpr_ci'])} (95% CI, of this threshold) "
        f"at the threshold calibrated for FPR {op['target_fpr']:g} (realised held-out FPR "
        f"{op['fpr_held_out']:.2f} on {op['n_held_out']} non-members); graded by "
        f"{audit.metadata['graded_by']}"
    )


SHAPES_FAIRNESS_MODELS = ("shapes", "shapes-biased")


@app.command()
def fairness(
    ctx: typer.Context,
    fork_time: float | None = typer.Option(
        None,
        "--fork-time",
        help="OU time where continuations are resampled (default: digits 1.5; shapes: the attribute's "
        "measured window, its upper end t_before; text-to-image: the prompt's measured window).",
    ),
    n: int = typer.Option(200, "--n", help="Number of samples (per method for text-to-image models)."),
    candidates: int = typer.Option(4, "--candidates", help="Continuations per trajectory (>= 2)."),
    target: str | None = typer.Option(None, "--target", help="Comma-separated target class distribution."),
    steps: int | None = typer.Option(
        None, "--steps", help="Sampler steps (default 50; text-to-image: the card's, else 25)."
    ),
    seed: str = typer.Option("0", "--seed"),
    model: str = typer.Option(
        "digits",
        "--model",
        help="digits, a shapes model (shapes, shapes-biased), or a text-to-image model (shapes-t2i-biased, "
        "shapes-t2i, or a StableDiffusionPipeline directory of 16x16 shapes images) with --prompt.",
    ),
    attribute: str | None = typer.Option(
        None, "--attribute", help="Shapes attribute to rebalance (background, shape, colour, mark)."
    ),
    prompt: str | None = typer.Option(
        None,
        "--prompt",
        help="Text-to-image models: a prompt that leaves --attribute open (e.g. 'a circle').",
    ),
    guidance: float | None = typer.Option(
        None, "--guidance", help="Text-to-image: guidance scale (default: the card's, else 7.5)."
    ),
    interval: str = typer.Option(
        "0.038,1.697",
        "--interval",
        help="Text-to-image: OU-time interval (low, high] of the interval-guidance method (default: "
        "Kynkaanniemi et al.'s sigma in (0.28, 5.42]).",
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the result as JSON to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress in a terminal."),
) -> None:
    """Rebalance an attribute by acting only at its window, graded by an independent judge.

    One reader selects the continuations and another, independent one grades the result (a number graded
    by its own selector measures the selector). digits: the CNN digit-classifier selects, the digit-judge
    (another CNN trained on the disjoint test split) grades. shapes (--attribute): the shapes-selector CNN
    selects (and measures the window), the analytic readers (the shapes-classifier for the shape) grade it
    and read the other attributes before and after (they should not move); the extra NFEs are reported.
    Text-to-image (--prompt): one table of plain sampling, prompt augmentation, interval guidance and the
    rebalancing at the prompt's measured window, on the same draws, with TVs to the target, the other
    attributes, caption adherence, KID and NFEs, all graded by the judges.
    """
    seed = parse_seed(seed)
    check_counts(n=n, steps=steps)
    check_positive_int(candidates, "--candidates", minimum=2)
    check_request_memory(
        steps=(f"--steps {steps}", (steps or 0) + 1),
        samples=(f"--n {n} x --candidates {candidates} samples", n * candidates),
    )
    if model not in ("digits", *SHAPES_FAIRNESS_MODELS) and is_prompt_model(model):
        reject_unused(ctx, {"fork_time": "is measured per prompt for text-to-image models (its window)"})
        if prompt is None or attribute is None:
            raise ValueError(f"--prompt and --attribute are required with the text-to-image model {model}")
        if guidance is not None and not guidance >= 0:
            raise ValueError(f"--guidance must be a number >= 0, got {guidance}")
        check_out_file(out, kind="fairness")
        bounds = parse_list(interval, "--interval", float, "two OU times")
        if len(bounds) != 2 or not 0 <= bounds[0] < bounds[1]:
            raise ValueError(
                f"--interval must be two OU times low,high with 0 <= low < high, got {interval!r}"
            )
        options = {"target": target, "steps": steps, "guidance": guidance, "n": n, "candidates": candidates}
        options.update(interval=tuple(bounds), seed=seed)
        prompt_fairness_command(
            model, prompt, attribute, options=options, out=out, as_json=as_json, progress=progress
        )
        return
    text_to_image = "applies to text-to-image models"
    reject_unused(ctx, {name: text_to_image for name in ("prompt", "guidance", "interval")})
    check_choice(model, "--model", ("digits", *SHAPES_FAIRNESS_MODELS))
    steps = 50 if steps is None else steps
    if fork_time is not None:
        check_time(fork_time, "--fork-time", allow_zero=False)
    if model == "digits" and attribute is not None:
        raise ValueError("--attribute applies to the shapes models (the digits model rebalances its class)")
    if model != "digits" and attribute is None:
        raise ValueError(f"--attribute is required with --model {model} (background, shape, colour or mark)")
    check_out_file(out, kind="fairness")
    show = progress and not as_json and sys.stderr.isatty()
    if model == "digits":
        result = _digits_fairness(fork_time, n, candidates, target, steps, seed, show)
    else:
        result = _shapes_fairness(model, attribute, fork_time, n, candidates, target, steps, seed, show)
    report = {**result.to_dict(), **output_marker("fairness")}
    if out is not None:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json_text(report, indent=None))
        return
    _print_fairness(result, candidates)


def _print_fairness(result, candidates: int) -> None:
    graded = result.graded()
    before = format_ci(graded["tv_before"], *graded["tv_before_ci"])
    after = format_ci(graded["tv_after"], *graded["tv_after_ci"])
    typer.echo(
        f"fork at OU time {result.fork_time:.3f} (step {result.fork_step}), {candidates} continuations per "
        f"sample: TV to target {before} -> {after} (95% CIs), graded by {graded['graded_by']}; "
        f"after = {[round(v, 3) for v in graded['after']]}"
    )
    typer.echo(
        f"the selector {result.metadata['feature']} reads its own choice as {result.tv_before:.3f} -> "
        f"{result.tv_after:.3f} (not independent: not a result)"
    )
    if result.nfe is not None and result.nfe_plain:
        typer.echo(f"cost: {result.nfe - result.nfe_plain} extra NFEs ({result.nfe / result.nfe_plain:.2f}x)")
    for name, other in result.others.items():
        verdict = "unchanged" if other["unchanged"] else "changed"
        judge = result.metadata["others"][name]
        typer.echo(
            f"{name}: TV before/after {format_ci(other['tv'], *other['tv_ci'])} (95% CI), {verdict} "
            f"(read by {judge})"
        )


def _digits_fairness(fork_time, n, candidates, target, steps, seed, progress):
    if target is not None:
        target = fairness_lib.check_target(
            parse_list(target, "--target", float, "probabilities"), NUM_CLASSES, "--target"
        )
    # Deferred: critwin.models.digits imports diffusers (seconds); options are checked above.
    from critwin.models.digits import load_digits_model

    return fairness_lib.rebalance(
        load_digits_model().process(num_inference_steps=steps),
        n,
        classifier_lib.classifier_feature(),
        NUM_CLASSES,
        1.5 if fork_time is None else fork_time,
        target=target,
        n_candidates=candidates,
        seed=seed,
        judge=judges_lib.digit_judge_feature(),
        progress=progress,
    )


def _shapes_fairness(model, attribute, fork_time, n, candidates, target, steps, seed, progress):
    # Deferred: the shapes models import diffusers (seconds); options are checked above.
    from critwin.models.shapes import ATTRIBUTES, attribute_readers, load_shapes_model

    check_choice(attribute, "--attribute", list(ATTRIBUTES))
    n_classes = len(ATTRIBUTES[attribute])
    if target is not None:
        target = fairness_lib.check_target(
            parse_list(target, "--target", float, "probabilities"), n_classes, "--target"
        )
    loaded = load_shapes_model(model)
    process = loaded.process(num_inference_steps=steps)
    judges = attribute_readers()
    judge = judges.pop(attribute)
    selector = judges_lib.selector_readers()[attribute]
    if fork_time is None:
        sources = loaded.training_data().images[:64]
        fork_time, _ = fairness_lib.window_fork_time(process, sources, selector, seed=seed, progress=progress)
    return fairness_lib.rebalance(
        process,
        n,
        selector,
        n_classes,
        fork_time,
        target=target,
        n_candidates=candidates,
        seed=seed,
        judge=judge,
        others=judges,
        progress=progress,
    )
