import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from siamese.cli import main
from siamese.data import DataError, make_synthetic
from siamese.diagnostics.explorer import NEIGHBOURS, explorer_payload
from siamese.diagnostics.page import page_data
from siamese.diagnostics.projection import stratified_sample, visualize_run
from siamese.diagnostics.saliency import saliency_maps
from tests.browser import dump_dom, find_chromium, results, screenshot, with_script
from tests.conftest import REPO

ARTEFACTS = REPO / "runs" / "test_artefacts"  # runs/ is ignored by git

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG


def test_visualize_writes_plots_and_one_row_per_embedded_image(run_dir, capsys):
    assert main(["visualize", str(run_dir), "--method", "both", "--split", "all"]) == 0
    split = pd.read_csv(run_dir / "split.csv")
    embedded = len(pd.read_csv(run_dir / "test_predictions.csv"))
    for method in ("tsne", "umap"):
        coords = pd.read_csv(run_dir / "projections" / f"{method}_all.csv")
        assert {"image_id", "split", "label", "x", "y", "misclassified"} <= set(coords.columns)
        assert coords["image_id"].is_unique and coords[["x", "y"]].notna().all().all()
        assert set(coords["split"]) == {"train", "val", "test"}
        assert (coords["split"] == "test").sum() == embedded
        assert (coords["split"] == "val").sum() == (split["split"] == "val").sum()
        assert coords.loc[coords["misclassified"], "split"].eq("test").all()
        for view in ("by_class", "by_split"):
            assert is_png(run_dir / "projections" / f"{method}_all_{view}.png")
    report = (run_dir / "report.md").read_text()
    assert "projections/umap_all_by_split.png" in report and "| classifier |" in report


def test_max_points_subsamples_and_says_so(run_dir, capsys):
    written = visualize_run(run_dir, ("tsne",), "test", max_points=20)
    assert written["points"] <= 22 and written["total_points"] > written["points"]
    assert len(pd.read_csv(run_dir / "projections" / "tsne_test.csv")) == written["points"]
    main(["visualize", str(run_dir), "--method", "tsne", "--split", "test", "--max-points", "20"])
    assert "subsampled" in capsys.readouterr().out


def test_stratified_sample_keeps_every_class():
    frame = pd.DataFrame({"label": ["a"] * 90 + ["b"] * 10})
    picks = stratified_sample(frame, 20)
    assert frame.iloc[picks]["label"].value_counts().to_dict() == {"a": 18, "b": 2}


def test_evaluation_plots_are_valid_pngs(run_dir):
    for name in ("confusion_matrix.png", "roc.png", "per_class.png", "confident_errors.png", "curves_embed.png"):
        assert is_png(run_dir / name), name


def test_saliency_overlays(run_dir, tmp_path):
    table = make_synthetic(lesions_per_class=1, seed=5)
    paths = []
    for i in range(2):
        Image.fromarray(table.images[i]).save(tmp_path / f"lesion_{i}.png")
        paths.append(tmp_path / f"lesion_{i}.png")
    written = saliency_maps(run_dir, paths, tmp_path / "cams")
    assert [p.name for p in written] == ["lesion_0_gradcam.png", "lesion_1_gradcam.png"]
    assert all(is_png(p) for p in written)


def test_visualize_refuses_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["visualize", str(tmp_path)]) == 2
    assert "a run folder written by train.py" in capsys.readouterr().err


def test_saliency_refuses_a_missing_image(run_dir, tmp_path, capsys):
    assert main(["saliency", str(run_dir), str(tmp_path / "absent.jpg")]) == 2
    assert "absent.jpg" in capsys.readouterr().err


def test_unknown_projection_method():
    from siamese.diagnostics.projection import project

    with pytest.raises(ValueError, match="unknown projection"):
        project(pd.DataFrame([[0.0, 1.0]] * 5).to_numpy(), "pca")


def test_visualize_without_thumbnails_draws_points_only(run_dir):
    plot = run_dir / "projections" / "tsne_test_by_class.png"
    assert main(["visualize", str(run_dir), "--method", "tsne", "--split", "test", "--thumbnails", "0"]) == 0
    points_only = plot.read_bytes()
    assert main(["visualize", str(run_dir), "--method", "tsne", "--split", "test", "--thumbnails", "2"]) == 0
    assert is_png(plot) and plot.read_bytes() != points_only


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_projections_adapt_to_three_points_and_refuse_two(method):
    import numpy as np

    from siamese.data import DataError
    from siamese.diagnostics.projection import project

    embeddings = np.random.default_rng(0).normal(size=(3, 16)).astype(np.float32)
    assert np.isfinite(project(embeddings, method)).all() and project(embeddings, method).shape == (3, 2)
    with pytest.raises(DataError, match="2 image\\(s\\): too few for a projection"):
        project(embeddings[:2], method)


def test_visualize_a_tiny_test_split(run_dir, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    split = pd.read_csv(run / "split.csv")
    test = split.index[split["split"] == "test"]
    for kept, code in ((3, 0), (2, 2)):
        split.loc[test[kept:], "split"] = "val"
        split.to_csv(run / "split.csv", index=False)
        assert main(["visualize", str(run), "--method", "umap", "--split", "test", "--thumbnails", "0"]) == code
    assert len(pd.read_csv(run / "projections" / "umap_test.csv")) == 3
    assert "test split): 2 image(s): too few for a projection" in capsys.readouterr().err


# --- the explorer page (siamese.diagnostics.explorer) ---

def explorer_page(run_dir, tmp_path, **options) -> Path:
    """The run's explorer page, copied out of the shared run folder so tests do not overwrite each other's."""
    visualize_run(run_dir, ("tsne",), html=True, **options)
    return Path(shutil.copy(run_dir / "projections" / "explorer.html", tmp_path / "explorer.html"))


def test_explorer_page_holds_every_point_and_its_nearest_training_images(run_dir, tmp_path, capsys):
    assert main(["visualize", str(run_dir), "--method", "tsne", "--html"]) == 0
    assert "explorer.html" in capsys.readouterr().out
    page = page_data(run_dir / "projections" / "explorer.html")
    stored = {s: np.load(run_dir / "embeddings" / f"{s}.npz") for s in ("train", "val", "test")}
    embedding_of = {i: e for s in stored.values() for i, e in zip(s["image_id"], s["embedding"], strict=True)}
    train_ids, train = stored["train"]["image_id"], stored["train"]["embedding"]
    records, n, k = page["records"], page["drawn"], page["k"]
    assert n == page["total"] == len(embedding_of) and set(records["id"][:n]) == set(embedding_of)
    thumbs = page_data(run_dir / "projections" / "explorer.html", "thumbs")
    assert k == NEIGHBOURS and len(thumbs) == len(records["id"]) and "thumb" not in records
    assert all(uri.startswith("data:image/jpeg;base64,") for uri in thumbs)
    coords = pd.read_csv(run_dir / "projections" / "tsne_all.csv").set_index("image_id")
    np.testing.assert_allclose(page["projections"]["t-SNE"]["x"], coords.loc[records["id"][:n], "x"], atol=1e-3)
    for i, image_id in enumerate(records["id"][:n]):
        distances = np.linalg.norm(train - embedding_of[image_id], axis=1)
        distances[train_ids == image_id] = np.inf  # an image is not its own neighbour
        np.testing.assert_allclose(page["distances"][i], np.sort(distances)[:k], atol=2e-4)
        neighbours = [records["id"][r] for r in page["neighbours"][i]]
        assert image_id not in neighbours and all(records["split"][r] == "train" for r in page["neighbours"][i])
        np.testing.assert_allclose([distances[train_ids == j][0] for j in neighbours], page["distances"][i], atol=2e-4)
    # the page's predictions are the classifier's: on the test split, those of test_predictions.csv
    predictions = pd.read_csv(run_dir / "test_predictions.csv", dtype={"image_id": str}).set_index("image_id")
    test = [i for i in range(n) if records["split"][i] == "test"]
    expected = predictions.loc[[records["id"][i] for i in test], [f"classifier_p_{c}" for c in page["classes"]]]
    np.testing.assert_allclose([page["proba"][i] for i in test], expected.to_numpy(), atol=1e-3)


def test_explorer_payload_marks_lesion_siblings_and_duplicate_partners():
    catalogue = pd.DataFrame({"image_id": list("abcdef"), "label": list("xxyyxy"), "group": ["L1", "L1", "L2", "L3",
                              "L4", "L5"], "split": ["train"] * 4 + ["test"] * 2, "row": [0, 1, 2, 3, 0, 1]})
    embeddings = np.eye(6)[:, :4] + np.arange(6)[:, None] * 0.01
    points = catalogue.iloc[[0, 4, 5]].reset_index(drop=True).assign(site=["back", "face", "back"], age=[30, 40, 50])
    pairs = pd.DataFrame({"from_img": ["e", "zz"], "to_img": ["c", "a"]})  # zz: an image the run lacks
    payload = explorer_payload(points, {"t-SNE": np.zeros((3, 2))}, embeddings[[0, 4, 5]], catalogue,
                               embeddings[:4], lambda split, row: f"{split}{row}", ["x", "y"], 9, pairs=pairs)
    ids = payload["records"]["id"]
    assert ids[:3] == ["a", "e", "f"] and payload["k"] == 3 and payload["total"] == 9
    assert "a" not in [ids[r] for r in payload["neighbours"][0]]  # a training image is not its own neighbour
    assert [ids[r] for r in payload["partners"][1]] == ["c"] and payload["partners"][0] == []
    assert payload["group_sizes"] == {"L1": 2} and payload["records"]["thumb"][1] == "test0"
    assert payload["group_noun"] == "lesion"
    assert payload["metadata"] == {"site": {"kind": "category", "values": ["back", "face", "back"]},
                                   "age": {"kind": "number", "values": [30.0, 40.0, 50.0]}}


def test_explorer_marks_the_duplicate_partners_of_the_runs_pair_list(run_dir, tmp_path):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    split = pd.read_csv(run / "split.csv")
    train, test = split.loc[split["split"] == "train", "image_id"], split.loc[split["split"] == "test", "image_id"]
    pairs = pd.DataFrame({"from_img": [train.iloc[0], test.iloc[0]], "to_img": [train.iloc[1], test.iloc[1]]})
    pairs.to_csv(tmp_path / "pairs.csv", index=False)
    config = json.loads((run / "config.json").read_text())
    config["data"]["duplicates"] = str(tmp_path / "pairs.csv")
    (run / "config.json").write_text(json.dumps(config))
    visualize_run(run, ("tsne",), html=True)
    page = page_data(run / "projections" / "explorer.html")
    ids = page["records"]["id"]
    partner_of = {ids[i]: [ids[r] for r in page["partners"][i]] for i in range(page["drawn"])}
    for a, b in zip(pairs["from_img"], pairs["to_img"], strict=True):
        assert partner_of[a] == [b] and partner_of[b] == [a]
    assert sum(map(len, partner_of.values())) == 4


def test_explorer_names_the_missing_embeddings(run_dir, tmp_path):
    for name in ("config.json", "split.csv", "preprocess.json"):
        shutil.copy(run_dir / name, tmp_path / name)
    with pytest.raises(DataError, match=r"embeddings.train\.npz.*embedder\.pt"):
        visualize_run(tmp_path, ("tsne",), html=True)


# Helpers of the scripts below: wait for the first drawing, find a point on screen from plotly's axes (WebGL
# points are no DOM elements), act with the mouse, count the points of the SVG overlay traces.
PAGE_HELPERS = """
  const out = document.createElement("pre"); out.id = "test-results"; document.body.append(out);
  const finish = (r) => { out.textContent = JSON.stringify(r); };
  const plot = document.getElementById("plot");
  const later = (ms) => new Promise((go) => setTimeout(go, ms));
  const mouse = (node, type, x, y) => node.dispatchEvent(new MouseEvent(type, { clientX: x, clientY: y,
    bubbles: true, cancelable: true, view: window, buttons: type === "mousedown" ? 1 : 0 }));
  function onScreen(i) {
    const layout = plot._fullLayout, box = plot.getBoundingClientRect(), main = plot.data[0];
    return [box.left + layout._size.l + layout.xaxis.l2p(main.x[i]),
      box.top + layout._size.t + layout.yaxis.l2p(main.y[i])];
  }
  // the points the page rings: the selected image, its neighbours, its lesion siblings, its duplicate partners
  const marked = () => ["selected", "neighbour", "sibling", "partner"].map((kind) =>
    [...plot.querySelectorAll(".trace" + kind + " path.point")].length);
  async function ready() {
    for (let tries = 0; tries < 200 && !document.body.dataset.ready; tries++) await later(50);
    if (!document.body.dataset.ready) throw new Error("the page never finished drawing");
  }
  const run = (steps) => ready().then(steps).then(finish, (e) => finish({ error: String(e) }));
"""

# Acts on the page as a person would: moves the mouse onto one point, reads the hover card, clicks, reads the
# panel; records what the page fetched besides its own data: URIs (it must fetch nothing).
HARNESS = "(function () {" + PAGE_HELPERS + """
  run(async () => {
    const [x, y] = onScreen(INDEX);
    const under = document.elementFromPoint(x, y);
    mouse(under, "mousemove", x, y);
    await later(300);
    const hover = document.getElementById("hover");
    const r = { points: plot._fullData[0]._length, type: plot._fullData[0].type, ready_ms: performance.now(),
      hover: hover.innerText, hover_image: (hover.querySelector("img") || { src: "" }).src,
      note: document.getElementById("note").innerText };
    mouse(under, "mousedown", x, y); mouse(under, "mouseup", x, y); mouse(under, "click", x, y);
    await later(500);
    r.panel = document.getElementById("panel").innerText;
    r.marked = marked();
    r.fetched = performance.getEntriesByType("resource").map((e) => e.name).filter((n) => !n.startsWith("data:"));
    return r;
  });
})();"""


def loneliest(xs: list[float], ys: list[float]) -> int:
    """The point farthest from any other, which the mouse cannot miss."""
    points = np.column_stack([xs, ys])
    gaps = np.linalg.norm(points[:, None] - points[None], axis=2) + np.diag(np.full(len(points), np.inf))
    return int(gaps.min(axis=1).argmax())


def test_explorer_in_headless_chromium_offline(run_dir, tmp_path):
    browser = find_chromium()
    page = explorer_page(run_dir, tmp_path, max_points=40)
    data = page_data(page)
    assert data["drawn"] < data["total"]
    i = loneliest(data["projections"]["t-SNE"]["x"], data["projections"]["t-SNE"]["y"])
    scripted = with_script(page, HARNESS.replace("INDEX", str(i)), tmp_path / "scripted.html")
    result = results(dump_dom(browser, scripted, tmp_path / "profile"))
    records, classes = data["records"], data["classes"]
    predicted = classes[int(np.argmax(data["proba"][i]))]
    assert result["points"] == data["drawn"] and result["type"] == "scattergl"
    assert f"{data['drawn']} of {data['total']} images: a stratified sample" in result["note"]
    assert result["hover"].splitlines() == [records["id"][i], f"label {records['label'][i]} · {records['split'][i]} · "
                                            f"predicted {predicted} (p {max(data['proba'][i]):.3f})"]
    assert result["hover_image"] == page_data(page, "thumbs")[i]
    assert result["marked"][0] == 1  # the clicked point is ringed
    for r, distance in zip(data["neighbours"][i], data["distances"][i], strict=True):
        assert records["id"][r] in result["panel"] and f"d {distance:.3f}" in result["panel"]
    assert result["fetched"] == []
    shot = screenshot(browser, scripted, ARTEFACTS / "explorer_chromium.png", tmp_path / "profile")
    assert is_png(shot)
    print(f"page ready after {result['ready_ms']:.0f} ms of browser time; screenshot {shot}")


# A browser without WebGL (blocklisted graphics, some remote desktops): no canvas hands out a WebGL context.
NO_WEBGL = """HTMLCanvasElement.prototype.getContext = ((get) => function (kind, ...rest) {
  return /webgl/.test(kind) ? null : get.call(this, kind, ...rest); })(HTMLCanvasElement.prototype.getContext);"""


def test_explorer_draws_svg_points_where_the_browser_has_no_webgl(run_dir, tmp_path):
    browser = find_chromium()
    page = explorer_page(run_dir, tmp_path, max_points=40)
    data = page_data(page)
    i = loneliest(data["projections"]["t-SNE"]["x"], data["projections"]["t-SNE"]["y"])
    without = with_script(page, NO_WEBGL, tmp_path / "no_webgl.html", first=True)
    script = HARNESS.replace("INDEX", str(i)).replace("run(async () => {", """run(async () => {
    const svg = plot.querySelector(".scatterlayer .trace").querySelectorAll("path.point").length;""").replace(
        "return r;", "r.svg_points = svg; return r;")
    result = results(dump_dom(browser, with_script(without, script, tmp_path / "scripted.html"), tmp_path / "profile"))
    assert result["type"] == "scatter" and result["svg_points"] == result["points"] == data["drawn"]
    assert result["hover"].splitlines()[0] == data["records"]["id"][i] and result["marked"][0] == 1

# Switches the colouring as a person would (the select's change event) and reads back the legend and the
# colours plotly drew; shows one legend value alone; finds an image by id and counts the ringed points.
CONTROLS = "(function () {" + PAGE_HELPERS + """
  run(async () => {
    const colour = document.getElementById("colour"), r = { colourings: {} };
    for (const name of COLOURINGS) {
      colour.value = name; colour.dispatchEvent(new Event("change"));
      await later(300);
      const marker = plot._fullData[0].marker;
      r.colourings[name] = { legend: document.getElementById("legend").innerText,
        colours: Array.isArray(marker.color) && typeof marker.color[0] === "string" ? new Set(marker.color).size : null,
        colorbar: plot.querySelectorAll(".colorbar").length };
    }
    colour.value = "split"; colour.dispatchEvent(new Event("change"));
    await later(300);
    [...document.querySelectorAll(".legend-item")].find((item) => item.innerText.startsWith("test")).click();
    await later(300);
    r.shown_alone = plot._fullData[0].marker.opacity.filter((o) => o > 0.5).length;
    const find = document.getElementById("find");
    find.dispatchEvent(new Event("focus"));
    r.options = document.querySelectorAll("#ids option").length;
    find.value = "IMAGE"; find.dispatchEvent(new Event("change"));
    await later(500);
    r.marked = marked();
    r.panel = document.getElementById("panel").innerText;
    return r;
  });
})();"""


def test_explorer_controls_in_headless_chromium(run_dir, tmp_path):
    """Colour-by switching, a legend value shown alone, and the selection of an image that has drawn lesion
    siblings and a duplicate partner: the page's ringed points and panel against its data."""
    browser = find_chromium()
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    catalogue = page_data(explorer_page(run, tmp_path))["records"]
    siblings = pd.Series(catalogue["group"]).value_counts()
    image = next(i for i, g in zip(catalogue["id"], catalogue["group"], strict=True) if siblings[g] > 2)
    partner = next(i for i, g in zip(catalogue["id"], catalogue["group"], strict=True) if siblings[g] == 1)
    pd.DataFrame({"from_img": [image], "to_img": [partner]}).to_csv(tmp_path / "pairs.csv", index=False)
    config = json.loads((run / "config.json").read_text())
    config["data"]["duplicates"] = str(tmp_path / "pairs.csv")
    (run / "config.json").write_text(json.dumps(config))
    page = explorer_page(run, tmp_path)
    data = page_data(page)
    records, n = data["records"], data["drawn"]
    assert n == data["total"] and "copy_kind" in data["metadata"]
    colourings = ["split", "correct or wrong", "errors by true class", "probability of the prediction", "copy_kind",
                  "class"]
    script = CONTROLS.replace("COLOURINGS", json.dumps(colourings)).replace("IMAGE", image)
    result = results(dump_dom(browser, with_script(page, script, tmp_path / "scripted.html"), tmp_path / "profile"))
    assert "error" not in result, result

    def legend_of(values) -> list[str]:
        counts = pd.Series(values).value_counts()
        return [f"{value} ({counts[value]})" for value in counts.index]

    predicted = [data["classes"][int(np.argmax(p))] for p in data["proba"]]
    right = ["correct" if p == label else "wrong" for p, label in zip(predicted, records["label"][:n], strict=True)]
    shown = result["colourings"]
    errors = [label if r == "wrong" else "correct" for r, label in zip(right, records["label"][:n], strict=True)]
    for name, values in (("split", records["split"][:n]), ("correct or wrong", right), ("errors by true class", errors),
                         ("copy_kind", data["metadata"]["copy_kind"]["values"]), ("class", records["label"][:n])):
        assert set(legend_of(values)) <= set(shown[name]["legend"].splitlines()), name
        assert shown[name]["colours"] == len(set(values)) and shown[name]["colorbar"] == 0, name
    assert shown["probability of the prediction"]["colours"] is None
    assert shown["probability of the prediction"]["colorbar"] == 1
    assert result["shown_alone"] == records["split"][:n].count("test") and result["options"] == n

    i = records["id"].index(image)
    group = records["group"][i]
    drawn_siblings = [r for r in range(n) if records["group"][r] == group and r != i]
    neighbours = [r for r in data["neighbours"][i] if r < n]
    assert [records["id"][r] for r in data["partners"][i]] == [partner]
    assert result["marked"] == [1, len(neighbours), len(drawn_siblings), 1]
    assert len(drawn_siblings) >= 2 and len(neighbours) == NEIGHBOURS
    assert f"{data['k']} nearest training images" in result["panel"] and "near-duplicate partners" in result["panel"]
    for r, distance in zip(data["neighbours"][i], data["distances"][i], strict=True):
        assert records["id"][r] in result["panel"] and f"d {distance:.3f}" in result["panel"]
    assert all(records["id"][r] in result["panel"] for r in drawn_siblings) and partner in result["panel"]
