"""The fused group's benchmark scripts keep running (tiny sizes; the figures are in BENCHMARKS.md)."""

from benches import load_bench

from trainable import sampler


def test_step_ops_counts_fused_calls_per_member_update(tiny_train, tiny_val, monkeypatch):
    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 4 * 8 * 32 * 32)  # chunks of 4 batches
    step_ops = load_bench("step_ops")
    one, four = (step_ops.count_fused(n, "fp32", "cpu", (tiny_train, tiny_val), batch=8, patch=8)
                 for n in (1, 4))
    assert one["chunk_batches"] == four["chunk_batches"] == 4
    assert one["update_ops"] == four["update_ops"] > 20  # the same calls for any N
    assert four["per_member"] == (four["draw_ops"] + four["update_ops"]) / 4
    assert 0 < four["views"] < four["draw_ops"] + four["update_ops"]


def test_fused_model_compares_grouped_convolutions_with_vmap():
    fused_model = load_bench("fused_model")
    row = fused_model.measure(2, batch=2, patch=8, reps=1)  # checks that both agree
    assert row["grouped_ops"] < row["vmap_ops"]
    assert row["grouped_ms"] > 0 and row["vmap_ms"] > 0
    assert "calls for N=2" in fused_model.residual_under_vmap()


def test_fused_cpu_times_both_forms_of_a_group(tiny_train, tiny_val):
    fused_cpu = load_bench("fused_cpu")
    rates = fused_cpu.compare_forms(2, (tiny_train, tiny_val), threads=1, amp="off", rounds=1,
                                    epoch_samples=16, batch=8, patch=8)
    assert rates.keys() == {"grouped", "per_member"} and min(rates.values()) > 0
