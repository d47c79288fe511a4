"""The text-to-image branches of ``critwin fairness`` and ``critwin privacy`` (not a command module).

Every option and every prompts file is checked before a network is loaded: prompts files must be UTF-8
text with one prompt per line (blank lines ignored), non-empty, without repeated prompts, and every prompt
within the tokenizer's limit (read from the model card, or from the pipeline's tokenizer files alone).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import typer

from critwin._display import format_ci
from critwin._io import atomic_write_json, json_text, output_marker
from critwin.cli._common import check_choice, parse_list
from critwin.models._store import PIPELINE_MODELS

__all__ = ["is_prompt_model", "read_prompt_file", "prompt_fairness_command", "prompt_privacy_command"]


PRIVACY_STEPS = 10
"""Sampler steps of ``critwin privacy`` on a text-to-image model unless ``--steps`` says otherwise: the
card's 25 would make the default audit of shapes-t2i-memorise (432 prompts) cost about 4x more (every
score but Wen's and the loss scales with the steps); at 10 steps and one clone it takes about 200 s of
one CPU thread."""


def is_prompt_model(model: str) -> bool:
    """A shipped text-to-image name, or a directory holding a diffusers pipeline."""
    return model in PIPELINE_MODELS or (Path(model) / "model_index.json").is_file()


def read_prompt_file(path: str, option: str) -> list[str]:
    """The prompts of a text file, one per line; one clear ValueError naming ``option`` otherwise."""
    file = Path(path)
    if not file.is_file():
        raise ValueError(f"{option} {path}: no such file")
    try:
        text = file.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{option} {path}: not UTF-8 text (byte {exc.start} cannot be decoded)") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"{option} {path}: holds no prompts (one prompt per line)")
    from critwin.diagnostics.prompt_sampling import check_prompts  # imports torch: after --help

    return check_prompts(prompts, f"{option} {path}")


def _check_lengths(directory: Path, prompts: list[str], where: str) -> None:
    """Every prompt within the tokenizer's limit, read without loading a network."""
    from critwin.diagnostics.prompt_sampling import check_prompts
    from critwin.diagnostics.prompt_shapes import model_card

    card = model_card(directory)
    max_tokens = card.get("config", {}).get("max_tokens")
    from transformers import CLIPTokenizer  # the tokenizer files alone: no weights are read

    tokenizer = CLIPTokenizer.from_pretrained(directory, subfolder="tokenizer", local_files_only=True)
    check_prompts(prompts, where, max_tokens or tokenizer.model_max_length, tokenizer)


def _show(progress: bool, as_json: bool) -> bool:
    return progress and not as_json and sys.stderr.isatty()


def _emit(report: dict, out: Path | None, as_json: bool, kind: str) -> bool:
    """Write ``--out`` and print ``--json``; True when the JSON was printed."""
    report = {**report, **output_marker(kind)}
    if out is not None:
        atomic_write_json(out, report)
    if as_json:
        typer.echo(json_text(report, indent=None))
    return as_json


def _ci(row: dict, key: str) -> str:
    """``row[key]`` beside its interval ``row[key + "_ci"]``, rounded to what the interval supports."""
    return format_ci(row[key], *row[f"{key}_ci"])


# ------------------------------------------------------------------------------------------- fairness
def prompt_fairness_command(
    model: str, prompt: str, attribute: str, *, options: dict, out: Path | None, as_json: bool, progress: bool
) -> None:
    """``critwin fairness --model DIR --prompt TEXT --attribute NAME``: the four methods' table."""
    from critwin.diagnostics.fairness import check_target
    from critwin.diagnostics.prompt_fairness import prompt_fairness
    from critwin.diagnostics.prompt_shapes import (
        augmenter,
        load_prompt_model,
        prompt_model_directory,
        reference_features,
        shapes_readers,
        specified_attributes,
    )
    from critwin.models.shapes import ATTRIBUTES

    check_choice(attribute, "--attribute", list(ATTRIBUTES))
    directory = prompt_model_directory(model)
    _check_lengths(directory, [prompt], "--prompt")
    specified = specified_attributes(prompt)
    if attribute in specified:
        raise ValueError(
            f"--prompt {prompt!r} names the {attribute} already: pick a prompt that leaves it open"
        )
    n_classes = len(ATTRIBUTES[attribute])
    target = options["target"]
    if target is not None:
        target = check_target(parse_list(target, "--target", float, "probabilities"), n_classes, "--target")
    loaded = load_prompt_model(model, options["steps"], options["guidance"])
    selectors, judges = shapes_readers()
    reference, embed = reference_features(specified, seed=options["seed"] + 12_345)
    result = prompt_fairness(
        loaded,
        prompt,
        attribute,
        selector=selectors[attribute],
        judges=judges,
        n_classes=n_classes,
        augment=augmenter(attribute),
        specified=specified,
        target=target,
        n=options["n"],
        n_candidates=options["candidates"],
        interval=options["interval"],
        reference=reference,
        embed=embed,
        seed=options["seed"],
        progress=_show(progress, as_json),
    )
    if _emit({"model": str(model), **result.to_dict()}, out, as_json, "fairness"):
        return
    print_fairness_table(result)


def print_fairness_table(result) -> None:
    meta = result.metadata
    window = result.windows["judge"]
    typer.echo(
        f"{meta['model']['model']}: {result.prompt!r}, {result.attribute} to target "
        f"{[round(v, 3) for v in result.target.tolist()]}; n = {meta['n']} per method, graded by "
        f"{meta['judges'][result.attribute]} (selector: {meta['selector']})"
    )
    if not window.get("constant"):
        typer.echo(
            f"window of the {result.attribute} (judge, 95% CIs): t_after {_ci(window, 't_after')}, "
            f"t_half {_ci(window, 't_half')}, t_before {_ci(window, 't_before')}; "
            f"rebalancing {_fork_text(result)}; "
            f"window measured with {result.window_nfe} NFEs (once per prompt)"
        )
    else:
        typer.echo(
            f"the {result.attribute} never varies among clones of one initial noise (judge): the initial "
            f"noise decides it; rebalancing {_fork_text(result)}"
        )
    typer.echo(
        f"{'method':<20} {'TV to target [95% CI]':<24} {'others unchanged':<17} {'adherence [95% CI]':<22} "
        f"{'KID [95% CI]':<22} {'NFEs':>7} {'extra':>7}"
    )
    for row in result.rows:
        kid = _ci(row, "kid") if "kid" in row else "-"
        typer.echo(
            f"{row['method']:<20} {_ci(row, 'tv'):<24} "
            f"{'yes' if row['others_unchanged'] else 'no':<17} {_ci(row, 'adherence'):<22} {kid:<22} "
            f"{row['nfe']:>7} {row['extra_nfe']:>+7}"
        )


# ------------------------------------------------------------------------------------------- privacy
def _prompt_sets(model: str, directory: Path, files: dict, seed: int):
    """The card's prompt sets, or the files' (counts from the card where it records them)."""
    from critwin.diagnostics.prompt_shapes import card_prompt_sets, model_card, prompt_sets_from_files

    if files["members"] is None and files["non_members"] is None:
        if files["calibration"] is not None:
            raise ValueError("--calibration needs --members and --non-members files")
        return card_prompt_sets(model, with_images=False), True
    if files["members"] is None or files["non_members"] is None:
        raise ValueError("--members and --non-members go together (text files of prompts, one per line)")
    read = {}
    for key, option in (
        ("members", "--members"),
        ("non_members", "--non-members"),
        ("calibration", "--calibration"),
    ):
        if files[key] is not None:
            read[key] = read_prompt_file(files[key], option)
            _check_lengths(directory, read[key], f"{option} {files[key]}")
    members, non_members, calibration = read["members"], read["non_members"], read.get("calibration")
    recorded = {
        m["prompt"]: int(m["count"])
        for m in (model_card(directory).get("memorisation") or {}).get("members", [])
    }
    counts = [recorded.get(p, 0) for p in members]
    return prompt_sets_from_files(members, non_members, calibration, counts, seed), False


def prompt_privacy_command(
    model: str, *, files: dict, options: dict, out, as_json: bool, progress: bool
) -> None:
    """``critwin privacy --model DIR --members FILE --non-members FILE``: the memorisation table."""
    from critwin.diagnostics.prompt_privacy import SCORES, memorisation_audit
    from critwin.diagnostics.prompt_shapes import card_prompt_sets, load_prompt_model, prompt_model_directory

    directory = prompt_model_directory(model)
    sets, from_card = _prompt_sets(model, directory, files, options["seed"])
    if from_card:
        _check_lengths(directory, sets.prompts, f"the prompts of {model}'s card")
    scores = parse_list(options["scores"], "--scores", str, f"scores ({', '.join(SCORES)})")
    for score in scores:
        if score not in SCORES:
            raise ValueError(f"--scores must name scores among {', '.join(SCORES)}, got {score!r}")
    skipped = {}
    if from_card and ({"loss", "copying"} & set(scores)):
        sets = card_prompt_sets(model, with_images=True)
    elif not from_card:
        for score in ("loss", "copying"):
            if score in scores:
                scores.remove(score)
                skipped[score] = (
                    "needs the prompts' images and the training set (known for a model's card prompts)"
                )
    steps = PRIVACY_STEPS if options["steps"] is None else options["steps"]
    loaded = load_prompt_model(model, steps, options["guidance"])
    audit = memorisation_audit(
        loaded,
        sets,
        scores=scores,
        n_generations=options["generations"],
        n_trajectories=options["trajectories"],
        n_clones=options["clones"],
        commitment_guidance=options["commitment_guidance"],
        fpr=options["fpr"],
        seed=options["seed"],
        progress=_show(progress, as_json),
    )
    report = {"model": str(model), **audit.to_dict(), "skipped": skipped}
    if _emit(report, out, as_json, "privacy"):
        return
    print_privacy_table(audit, skipped)


def print_privacy_table(audit, skipped: dict) -> None:
    sets = audit.sets
    typer.echo(
        f"{audit.metadata['model']['model']}: {len(sets.members)} members, {len(sets.non_members)} held-out "
        f"non-members, {len(sets.calibration)} calibration prompts; graded by {audit.to_dict()['graded_by']}"
    )
    if not audit.metadata["calibration_resolves_fpr"]:
        typer.echo(
            f"note: {len(sets.calibration)} calibration prompts cannot resolve an FPR of "
            f"{audit.metadata['fpr_requested']:g}; the TPR is at {audit.fpr:.3g}, the smallest they resolve"
        )
    typer.echo(
        f"{'score':<11} {'count':>5} {'ROC-AUC [95% CI]':<22} {f'TPR@{audit.fpr:.3g} FPR [95% CI]':<24} "
        f"{'held-out FPR':>12} {'NFEs/prompt':>12}"
    )
    for name, rows in audit.rows.items():
        for row in rows:
            count = "all" if row["count"] is None else str(row["count"])
            typer.echo(
                f"{name:<11} {count:>5} {_ci(row, 'auc'):<22} "
                f"{_ci(row, 'tpr'):<24} {row['fpr_held_out']:>12.3f} "
                f"{audit.nfe_per_prompt[name]:>12.0f}"
            )
    for name, why in skipped.items():
        typer.echo(f"{name}: not computed ({why})")


def _fork_text(result) -> str:
    """Where the rebalancing forked, in words."""
    if math.isinf(result.fork_time):
        return "draws its candidates from the prior (the window is open above the first step)"
    return f"forks at OU time {result.fork_time:.3f} (step {result.fork_step})"
