"""``critwin privacy`` and ``critwin fairness``: the diagnostics on the shipped digits models."""

from __future__ import annotations

from pathlib import Path

import typer

from critwin.cli import app
from critwin.cli._common import parse_list


@app.command()
def privacy(
    model: str = typer.Option("digits-memorise", "--model", help="Shipped model: digits or digits-memorise."),
    members: int = typer.Option(20, "--members", help="Training images audited as members."),
    nonmembers: int = typer.Option(
        40, "--nonmembers", help="Held-out images (half calibrate the threshold)."
    ),
    times: str = typer.Option("0.05,0.3,0.8,1.5,2.5", "--times", help="Comma-separated OU times."),
    steps: int = typer.Option(20, "--steps", help="Sampler steps."),
    replicates: int = typer.Option(2, "--replicates", help="Forward-reverse replicates per image and time."),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", help="Write the audit as JSON to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
) -> None:
    """Memorised images commit early: ROC-AUC of commitment times, members vs held-out non-members."""
    from critwin._io import atomic_write_json, json_text
    from critwin._validation import check_positive_int
    from critwin.diagnostics.privacy import membership_audit
    from critwin.models.digits import load_digits_model

    if model not in ("digits", "digits-memorise"):
        raise ValueError(f"model must be 'digits' or 'digits-memorise', got {model!r}")
    requested_times = parse_list(times, "--times", float, "OU times")
    members = check_positive_int(members, "members")
    nonmembers = check_positive_int(nonmembers, "nonmembers", minimum=2)
    loaded = load_digits_model(model)
    data = loaded.training_data()
    if members > data.train_images.shape[0]:
        raise ValueError(f"members must be <= {data.train_images.shape[0]} (the model's training set)")
    if nonmembers > data.test_images.shape[0]:
        raise ValueError(f"nonmembers must be <= {data.test_images.shape[0]} (the held-out set)")
    audit = membership_audit(
        loaded.process(num_inference_steps=check_positive_int(steps, "steps")),
        data.train_images[:members],
        data.test_images[:nonmembers],
        requested_times,
        n_per_time=replicates,
        seed=seed,
    )
    report = {"model": model, **audit.to_dict()}
    if out is not None:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json_text(report, indent=None))
        return
    op = audit.operating_point
    typer.echo(
        f"{model}: ROC-AUC {audit.auc:.3f} (95% CI {audit.auc_ci[0]:.3f}-{audit.auc_ci[1]:.3f}); "
        f"TPR {op['tpr']:.2f} at the threshold calibrated for FPR {op['target_fpr']:g} "
        f"(held-out FPR {op['fpr_held_out']:.2f})"
    )


@app.command()
def fairness(
    fork_time: float = typer.Option(1.5, "--fork-time", help="OU time where continuations are resampled."),
    n: int = typer.Option(200, "--n", help="Number of samples."),
    candidates: int = typer.Option(4, "--candidates", help="Continuations per trajectory (>= 2)."),
    target: str | None = typer.Option(None, "--target", help="Comma-separated target class distribution."),
    steps: int = typer.Option(50, "--steps", help="Sampler steps."),
    seed: int = typer.Option(0, "--seed"),
    out: Path | None = typer.Option(None, "--out", help="Write the result as JSON to this file."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a summary."),
) -> None:
    """Rebalance the digit class of the shipped DDPM by acting only at its window (--fork-time)."""
    from critwin._io import atomic_write_json, json_text
    from critwin._validation import check_positive_int
    from critwin.diagnostics.fairness import rebalance
    from critwin.models.classifier import classifier_feature
    from critwin.models.digits import load_digits_model

    target_values = None if target is None else parse_list(target, "--target", float, "probabilities")
    process = load_digits_model().process(num_inference_steps=check_positive_int(steps, "steps"))
    result = rebalance(
        process,
        n,
        classifier_feature(),
        10,
        fork_time,
        target=target_values,
        n_candidates=candidates,
        seed=seed,
    )
    report = result.to_dict()
    if out is not None:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json_text(report, indent=None))
        return
    typer.echo(
        f"fork at OU time {result.fork_time:.3f} (step {result.fork_step}): TV to target "
        f"{result.tv_before:.3f} -> {result.tv_after:.3f} with {candidates} continuations per sample; "
        f"after = {[round(v, 3) for v in result.after.tolist()]}"
    )
