"""The ``compare`` page: built from compare.csv, checked against the table and in headless Chromium."""

import numpy as np
import pandas as pd
import pytest

from siamese.data import DataError
from siamese.diagnostics.compare_page import compare_payload, main, write_compare_page
from siamese.diagnostics.page import page_data
from siamese.workflows.crossval.compare import Recipe, comparison_table
from tests.browser import dump_dom, find_chromium, results, with_script

REFERENCES = ("finetune", "colour_baseline")


def compare_folder(folder, runs: int = 4):
    """A compare OUT folder as ``compare`` leaves it, from made-up run figures: recipe a beats finetune in
    every run, b loses in every run."""
    rng = np.random.default_rng(0)
    rows = []
    for seed in range(runs):
        tuned = 0.7 + 0.02 * seed
        run = {"seed": seed, "fold": 0}
        rows += [{**run, "recipe": "a-semihard", "model": "finetune", "balanced_accuracy": tuned, "roc_auc": tuned,
                  "seconds": 50.0},
                 {**run, "recipe": "a-semihard", "model": "colour_baseline", "balanced_accuracy": 0.5, "roc_auc": 0.6,
                  "seconds": np.nan}]
        for recipe, offset, seconds in (("a-semihard", 0.03, 20.0), ("b-none", -0.02 * (seed + 1), 30.0)):
            for model in ("classifier", "knn"):
                rows.append({**run, "recipe": recipe, "model": model, "balanced_accuracy": tuned + offset,
                             "roc_auc": tuned + rng.normal(0, 0.01), "seconds": seconds})
    table = comparison_table(pd.DataFrame(rows), [Recipe("a", "semihard"), Recipe("b", "none")], REFERENCES)
    folder.mkdir(parents=True, exist_ok=True)
    table.to_csv(folder / "compare.csv", index=False)
    (folder / "compare.md").write_text("# Stage-1 recipes on synthetic: train/val/test runs, seeds [0, 1, 2, 3]\n")
    return table


def test_compare_page_holds_every_figure_of_compare_csv(tmp_path):
    table = compare_folder(tmp_path / "out")
    assert main([str(tmp_path / "out")]) == 0
    page = page_data(tmp_path / "out" / "compare.html")
    assert page["title"] == "Stage-1 recipes on synthetic: train/val/test runs, seeds [0, 1, 2, 3]"
    assert page["metrics"] == ["balanced_accuracy", "roc_auc"] and page["references"] == list(REFERENCES)
    assert [(r["recipe"], r["model"]) for r in page["rows"]] == list(zip(table["recipe"], table["model"], strict=True))
    for row, (_, expected) in zip(page["rows"], table.iterrows(), strict=True):
        assert row["mean"]["roc_auc"] == pytest.approx(expected["roc_auc_mean"]) and row["runs"] == expected["runs"]
        for reference in REFERENCES:
            d = row["vs"].get(reference, {}).get("balanced_accuracy")
            prefix = f"balanced_accuracy_vs_{reference}"
            if pd.isna(expected.get(prefix)):
                assert d is None  # a reference's own row
            else:
                assert (d["mean"], d["low"], d["high"]) == pytest.approx(
                    (expected[prefix], expected[prefix + "_low"], expected[prefix + "_high"]))
                assert (d["ahead"], d["runs"]) == (expected[prefix + "_ahead"], expected[prefix + "_runs"])
    colour = next(r for r in page["rows"] if r["model"] == "colour_baseline")
    assert colour["seconds"] is None and colour["vs"] == {}


def test_compare_page_refuses_a_folder_without_its_table(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main([str(tmp_path)])
    assert "compare.csv not found" in capsys.readouterr().err
    with pytest.raises(DataError, match="lacks"):
        compare_payload(pd.DataFrame({"recipe": ["a"]}), "x")


COMPARE_HARNESS = """(function () {
  const out = document.createElement("pre"); out.id = "test-results"; document.body.append(out);
  const later = (ms) => new Promise((go) => setTimeout(go, ms));
  (async () => {
    for (let tries = 0; tries < 200 && !document.body.dataset.ready; tries++) await later(50);
    const plot = document.getElementById("differences");
    const bars = (p) => p.data.map((t) => ({ name: t.name, x: t.x, plus: t.error_x.array,
      minus: t.error_x.arrayminus }));
    const r = { ready: !!document.body.dataset.ready, first: bars(plot),
      panels: new Set(plot._fullData.map((t) => t.xaxis)).size, drawn: plot.querySelectorAll("path.xerror").length,
      rows: [...document.querySelectorAll("#rows tr")].map((tr) => tr.innerText.split("\\t")),
      ahead: document.querySelectorAll("td.ahead").length, behind: document.querySelectorAll("td.behind").length,
      seconds: document.getElementById("seconds").data[0].x };
    const metric = document.getElementById("metric");
    metric.value = "roc_auc"; metric.dispatchEvent(new Event("change"));
    await later(300);
    r.second = bars(plot);
    r.fetched = performance.getEntriesByType("resource").map((e) => e.name).filter((n) => !n.startsWith("data:"));
    out.textContent = JSON.stringify(r);
  })().catch((e) => { out.textContent = JSON.stringify({ error: String(e) }); });
})();"""


def test_compare_page_in_headless_chromium_offline(tmp_path):
    browser = find_chromium()
    table = compare_folder(tmp_path / "out")
    page = write_compare_page(tmp_path / "out")
    result = results(dump_dom(browser, with_script(page, COMPARE_HARNESS, tmp_path / "scripted.html"),
                              tmp_path / "profile"))
    assert result.get("ready"), result
    own = table[table["model"].isin(["classifier", "knn"])]
    for shown, metric in ((result["first"], "balanced_accuracy"), (result["second"], "roc_auc")):
        assert [t["name"] for t in shown] == [f"minus {r}" for r in REFERENCES]
        for trace, reference in zip(shown, REFERENCES, strict=True):
            prefix = f"{metric}_vs_{reference}"
            np.testing.assert_allclose(trace["x"], own[prefix], atol=1e-9)
            np.testing.assert_allclose(trace["plus"], own[prefix + "_high"] - own[prefix], atol=1e-9)
            np.testing.assert_allclose(trace["minus"], own[prefix] - own[prefix + "_low"], atol=1e-9)
    assert result["panels"] == len(REFERENCES) and result["drawn"] == len(own) * len(REFERENCES)  # one bar a point
    rows = {(r[0], r[1]): r for r in result["rows"]}
    assert len(rows) == len(table) and rows["a-semihard", "classifier"][4].endswith(" 4/4")
    assert rows["b-none", "classifier"][4].endswith(" 0/4")
    lows = own[[f"{m}_vs_{r}_low" for m in ("balanced_accuracy", "roc_auc") for r in REFERENCES]].to_numpy()
    highs = own[[f"{m}_vs_{r}_high" for m in ("balanced_accuracy", "roc_auc") for r in REFERENCES]].to_numpy()
    assert (result["ahead"], result["behind"]) == ((lows > 0).sum(), (highs < 0).sum()) and result["behind"] >= 2
    np.testing.assert_allclose(result["seconds"], table["seconds"].dropna())
    assert result["fetched"] == []
