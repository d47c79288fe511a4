"""CUDA checks (``pytest -m gpu``): the same experiments on a GPU agree with the CPU."""

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_mixture_scores_posteriors_and_sampling_on_cuda(random_mixture):
    for kind in ("iso", "diag", "full"):
        mix = random_mixture(kind, K=8, d=16, seed=0)
        x = torch.randn(256, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        gpu = mix.to(device="cuda")
        torch.testing.assert_close(gpu.score(x.cuda(), 0.5).cpu(), mix.score(x, 0.5), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(
            gpu.posterior(x.cuda(), 0.5).cpu(), mix.posterior(x, 0.5), rtol=1e-9, atol=1e-12
        )
        g = torch.Generator(device="cuda").manual_seed(0)
        x0, labels = gpu.sample_posterior(x.cuda(), 0.5, g)
        assert x0.device.type == "cuda" and labels.device.type == "cuda" and torch.isfinite(x0).all()


def test_forward_reverse_on_a_cuda_mixture_matches_the_label_law():
    from critwin import GaussianMixture, forward_reverse

    mix = GaussianMixture(torch.tensor([[4.0, 0.0], [-4.0, 0.0]], dtype=torch.float64)).to(device="cuda")
    x0 = mix.subset([0]).sample(2000, torch.Generator(device="cuda").manual_seed(0))[0]
    res = forward_reverse(mix, x0, [0.2, 2.0], feature="component", sampler="exact", seed=0, progress=False)
    kept = (res.labels == res.source_labels).double().mean(1)
    assert kept[0] > 0.97 and 0.3 < kept[1] < 0.8


def test_digits_model_on_cuda_agrees_with_cpu():
    from critwin import classifier_feature, forward_reverse, load_digits_model

    model = load_digits_model()
    data = model.training_data()
    x0 = data.test_images[:64]
    feature = classifier_feature()
    cpu = model.process(num_inference_steps=20)
    model.unet.to("cuda")
    gpu = model.process(num_inference_steps=20)
    t_index, _ = gpu.locate(0.3)
    noise_gen = torch.Generator(device="cuda").manual_seed(0)
    noised = gpu.add_noise(x0.cuda(), t_index, generator=noise_gen)
    out_gpu = gpu.run(noised, start=t_index, generator=noise_gen)
    assert out_gpu.device.type == "cuda" and torch.isfinite(out_gpu).all()
    model.unet.to("cpu")
    out_cpu = cpu.run(noised.cpu(), start=t_index, generator=torch.Generator().manual_seed(0))
    # different noise streams on the two devices: compare the class agreement with the sources
    agree_gpu = (feature(out_gpu.cpu()) == data.test_labels[:64]).double().mean()
    agree_cpu = (feature(out_cpu) == data.test_labels[:64]).double().mean()
    assert abs(agree_gpu - agree_cpu) < 0.2
    model.unet.to("cuda")
    res = forward_reverse(gpu, x0.cuda(), [0.05, 3.0], feature=feature, seed=0, progress=False)
    kept = (res.labels == res.source_labels).double().mean(1)
    assert kept[0] > 0.85 and kept[1] < 0.5


def test_diagnostics_run_on_a_cuda_model():
    from critwin import classifier_feature, load_digits_model
    from critwin.diagnostics.fairness import rebalance
    from critwin.diagnostics.privacy import membership_audit

    model = load_digits_model("digits-memorise")
    model.unet.to("cuda")
    data = model.training_data()
    audit = membership_audit(
        model.process(num_inference_steps=20),
        data.train_images[:10].cuda(),
        data.test_images[:20].cuda(),
        [0.05, 0.3, 1.0, 2.5],
        n_per_time=2,
        seed=0,
    )
    assert audit.auc >= 0.9
    main = load_digits_model()
    main.unet.to("cuda")
    res = rebalance(main.process(num_inference_steps=20), 64, classifier_feature(), 10, 1.5, seed=0)
    assert res.samples.device.type == "cuda" and res.tv_after <= res.tv_before


def test_cli_sweep_on_a_latent_pipeline_in_float16_on_cuda(tmp_path, capsys):
    """Issue 15 item 9: CPU sources into a CUDA float16 VAE used to crash (device not moved)."""
    import csv

    from safetensors.torch import save_file

    from critwin.cli import main
    from tiny_models import tiny_stable_diffusion

    tiny_stable_diffusion(0).save_pretrained(tmp_path / "sd")
    save_file({"prompt_embeds": torch.randn(1, 5, 16)}, str(tmp_path / "embeds.safetensors"))
    argv = ["sweep", "--model", str(tmp_path / "sd"), "--prompt-embeds", str(tmp_path / "embeds.safetensors")]
    argv += ["--guidance", "1", "--device", "cuda", "--dtype", "float16", "--steps", "4", "--n", "2"]
    argv += ["--times", "0,0.5", "--n-per-time", "1", "--out", str(tmp_path / "out"), "--no-progress"]
    try:
        main(argv)
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    with open(tmp_path / "out" / "table.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    # t = 0 leaves each source untouched: it is nearest to itself.
    assert all(r["label"] == r["source_label"] for r in rows if float(r["t"]) == 0.0)
    assert len(rows) == 2 * 2


def test_sd3_shaped_adapter_equals_the_bare_loop_on_cuda(capsys):
    """scripts/gpu_sd3_check.py at reduced size: the adapter's bfloat16 trajectory is the bare loop's."""
    from gpu_scripts import load_script

    code = load_script("gpu_sd3_check").main(
        ["--layers", "2", "--steps", "4", "--batch", "2", "--repeats", "1"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "byte-identical" in out, out
