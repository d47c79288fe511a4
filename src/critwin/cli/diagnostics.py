"""``critwin privacy`` and ``critwin fairness``: the diagnostics on the shipped models (privacy: digits and
shapes; fairness: digits)."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin._io import atomic_write_json, json_text, output_marker
from critwin._lazy import deferred_import
from critwin._validation import check_positive_int, check_time, parse_seed
from critwin.cli import app
from critwin.cli._common import (
    EXECUTOR_HELP,
    RAY_ADDRESS_HELP,
    RAY_TIMEOUT_HELP,
    check_choice,
    check_counts,
    check_out_file,
    executor_options,
    parse_list,
    parse_times,
)
from critwin.models._store import PIPELINE_MODELS, SHIPPED_MODELS, load_card
from critwin.models.data import NUM_CLASSES

# Imported where a diagnostic runs, after every option is checked (they import torch and the models).
fairness_lib = deferred_import("critwin.diagnostics.fairness", globals(), "fairness_lib")
privacy_lib = deferred_import("critwin.diagnostics.privacy", globals(), "privacy_lib")
classifier_lib = deferred_import("critwin.models.classifier", globals(), "classifier_lib")

# Image models of one network (the text models and the text-to-image pipelines have their own paths).
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
    model: str = typer.Option(
        "digits-memorise", "--model", help=f"Shipped model: {', '.join(PRIVACY_MODELS)}."
    ),
    members: int = typer.Option(20, "--members", help="Training images audited as members."),
    nonmembers: int = typer.Option(
        40, "--nonmembers", help="Held-out images (half calibrate the threshold)."
    ),
    times: str = typer.Option("0.05,0.3,0.8,1.5,2.5", "--times", help="Comma-separated OU times."),
    steps: int = typer.Option(20, "--steps", help="Sampler steps."),
    replicates: int = typer.Option(2, "--replicates", help="Forward-reverse replicates per image and time."),
    seed: str = typer.Option("0", "--seed"),
    out: Path | None = typer.Option(None, "--out", help="Write the audit as JSON to this file."),
    executor: str = typer.Option("local", "--executor", help=EXECUTOR_HELP),
    ray_address: str | None = typer.Option(None, "--ray-address", help=RAY_ADDRESS_HELP),
    ray_timeout: float | None = typer.Option(None, "--ray-timeout", help=RAY_TIMEOUT_HELP),
    fpr: float = typer.Option(
        0.05, "--fpr", help="Target false-positive rate (needs >= 1/FPR calibration non-members)."
    ),
    as_json: bool = typer.Option(
        False,
        "--json",
        help="Print one JSON object instead of a summary. Commitment times outside the measured range are "
        'censored: {"value": null, "censored": "above"} (kept at the largest time) or "below".',
    ),
) -> None:
    """Memorised images commit early: ROC-AUC of commitment times, members vs held-out non-members."""
    seed = parse_seed(seed)
    check_choice(model, "--model", PRIVACY_MODELS)
    requested_times = parse_times(times)
    check_counts(members=members, steps=steps, replicates=replicates)
    check_positive_int(nonmembers, "--nonmembers", minimum=2)
    check_out_file(out, kind="privacy")
    runs_on = executor_options(executor, ray_address, ray_timeout)
    if not 0 < fpr < 1:
        raise ValueError(f"--fpr must lie in (0, 1), got {fpr}")
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
        f"{model}: ROC-AUC {audit.auc:.3f} (95% CI {audit.auc_ci[0]:.3f}-{audit.auc_ci[1]:.3f}); "
        f"TPR {op['tpr']:.2f} at the threshold calibrated for FPR {op['target_fpr']:g} "
        f"(realised held-out FPR {op['fpr_held_out']:.2f} on {op['n_held_out']} non-members)"
    )


SHAPES_FAIRNESS_MODELS = ("shapes", "shapes-biased")


@app.command()
def fairness(
    fork_time: float | None = typer.Option(
        None,
        "--fork-time",
        help="OU time where continuations are resampled (default: digits 1.5; shapes: the attribute's "
        "measured window, its upper end t_before).",
    ),
    n: int = typer.Option(200, "--n", help="Number of samples."),
    candidates: int = typer.Option(4, "--candidates", help="Continuations per trajectory (>= 2)."),
    target: str | None = typer.Option(None, "--target", help="Comma-separated target class distribution."),
    steps: int = typer.Option(50, "--steps", help="Sampler steps."),
    seed: str = typer.Option("0", "--seed"),
    model: str = typer.Option("digits", "--model", help="digits, or a shapes model: shapes, shapes-biased."),
    attribute: str | None = typer.Option(
        None, "--attribute", help="Shapes attribute to rebalance (background, shape, colour, mark)."
    ),
    out: Path | None = typer.Option(None, "--out", help="Write the result as JSON to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
) -> None:
    """Rebalance an attribute by acting only at its window (--fork-time).

    digits: the CNN classifier selects the continuations; an independent reader (nearest class mean of
    the training digits) judges the result, reported beside the selector's own reading. shapes
    (--attribute): the attribute's analytic reader (border pixels for background) selects and judges;
    the other attributes are read before and after (they should not move), and the extra NFEs reported.
    """
    seed = parse_seed(seed)
    check_choice(model, "--model", ("digits", *SHAPES_FAIRNESS_MODELS))
    if fork_time is not None:
        check_time(fork_time, "--fork-time", allow_zero=False)
    check_counts(n=n, steps=steps)
    check_positive_int(candidates, "--candidates", minimum=2)
    if model == "digits" and attribute is not None:
        raise ValueError("--attribute applies to the shapes models (the digits model rebalances its class)")
    if model != "digits" and attribute is None:
        raise ValueError(f"--attribute is required with --model {model} (background, shape, colour or mark)")
    check_out_file(out, kind="fairness")
    if model == "digits":
        result = _digits_fairness(fork_time, n, candidates, target, steps, seed)
    else:
        result = _shapes_fairness(model, attribute, fork_time, n, candidates, target, steps, seed)
    report = {**result.to_dict(), **output_marker("fairness")}
    if out is not None:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json_text(report, indent=None))
        return
    typer.echo(
        f"fork at OU time {result.fork_time:.3f} (step {result.fork_step}): TV to target "
        f"{result.tv_before:.3f} -> {result.tv_after:.3f} by the selecting reader, "
        f"{result.tv_judged_before:.3f} -> {result.tv_judged_after:.3f} by the judge "
        f"({'nearest class mean' if model == 'digits' else 'analytic ' + str(attribute) + ' reader'}) "
        f"with {candidates} continuations per sample; "
        f"after = {[round(v, 3) for v in result.after.tolist()]}"
    )
    if result.nfe is not None and result.nfe_plain:
        typer.echo(f"cost: {result.nfe - result.nfe_plain} extra NFEs ({result.nfe / result.nfe_plain:.2f}x)")
    for name, other in result.others.items():
        low, high = other["tv_ci"]
        verdict = "unchanged" if other["unchanged"] else "changed"
        typer.echo(f"{name}: TV before/after {other['tv']:.3f} (CI {low:.3f}-{high:.3f}), {verdict}")


def _digits_fairness(fork_time, n, candidates, target, steps, seed):
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
        judge=classifier_lib.ClassMeanReader(),
    )


def _shapes_fairness(model, attribute, fork_time, n, candidates, target, steps, seed):
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
    readers = attribute_readers()
    reader = readers.pop(attribute)
    if fork_time is None:
        sources = loaded.training_data().images[:64]
        fork_time, _ = fairness_lib.window_fork_time(process, sources, reader, seed=seed)
    return fairness_lib.rebalance(
        process,
        n,
        reader,
        n_classes,
        fork_time,
        target=target,
        n_candidates=candidates,
        seed=seed,
        judge=reader,
        others=readers,
    )
