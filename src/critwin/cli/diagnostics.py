"""``critwin privacy``: membership inference by commitment time on a shipped digits model."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from critwin.cli import app


def _parse_times(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"times must be comma-separated OU times, got {text!r}") from None


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
    from critwin._io import atomic_write_json
    from critwin._validation import check_positive_int
    from critwin.diagnostics.privacy import membership_audit
    from critwin.models.digits import load_digits_model

    if model not in ("digits", "digits-memorise"):
        raise ValueError(f"model must be 'digits' or 'digits-memorise', got {model!r}")
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
        _parse_times(times),
        n_per_time=replicates,
        seed=seed,
    )
    report = {"model": model, **audit.to_dict()}
    if out is not None:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json.dumps(report))
        return
    op = audit.operating_point
    typer.echo(
        f"{model}: ROC-AUC {audit.auc:.3f} (95% CI {audit.auc_ci[0]:.3f}-{audit.auc_ci[1]:.3f}); "
        f"TPR {op['tpr']:.2f} at the threshold calibrated for FPR {op['target_fpr']:g} "
        f"(held-out FPR {op['fpr_held_out']:.2f})"
    )
