"""report.html in a real browser (headless Chromium through Selenium): for a tiny trained experiment of
each task, no JavaScript error, every image and plot loaded, a table sorts by a column, the class filter
hides the other classes, a thumbnail shows the image of the id it names, and a class's false positives
are one click away. `make test` installs Chromium first (`make browser`)."""

from __future__ import annotations

import base64
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folders, make_masks, seg_config, single_config, train_from_file
from PIL import Image

from mlic import Stage
from mlic.train.stages import run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(
    not (CHROMIUM and DRIVER), reason="no chromium/chromedriver: `make browser` installs them (apt-get)"
)


CONFIG = """
from mlic import Config, Data, Model, Stage, env_path

config = Config(
    experiment_name="html_tiny",
    data=Data(root=env_path("ROOT_PATH"), img_size=(32, 32), batch_size=8, num_workers=0),
    model=Model(name="test_resnet", pretrained=False),
    stages=[Stage("full", epochs=2, lr=3e-3)],
    trainer=dict(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False),
    seed=0,
)
"""


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny trained experiment of each task (the multi-label one from a config file, as a user
    trains); task -> its folder."""
    base = tmp_path_factory.mktemp("html")
    out = {"multi_label": train_from_file(base / "multi", CONFIG)}
    single = single_config(make_folders(base / "single", counts=(("train", 9), ("valid", 6), ("test", 9))))
    seg = seg_config(make_masks(base / "seg", counts=(("train", 8), ("valid", 4), ("test", 4))))
    for config in (single, seg):
        config.stages = [Stage("full", epochs=2)]
        config.output_dir = str(base / "experiments")
        out[config.task] = run(config).exp_dir
    return out


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no chromium/chromedriver: `make browser` installs them (apt-get)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1600"):
        options.add_argument(arg)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _open(browser, exp_dir: Path):
    browser.get((exp_dir / "report.html").resolve().as_uri())
    return browser


def _decoded(src: str) -> np.ndarray:
    return np.asarray(
        Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1]))).convert("RGB"), dtype=float
    )


@needs_browser
@pytest.mark.parametrize("task", ["multi_label", "single_label", "segmentation"])
def test_the_report_loads_without_errors_with_every_image_and_plot(reports, browser, task):
    page = _open(browser, reports[task])
    severe = [entry for entry in page.get_log("browser") if entry["level"] == "SEVERE"]
    assert severe == []
    widths = page.execute_script(
        "return Array.from(document.images).map(i => i.complete ? i.naturalWidth : 0)"
    )
    assert widths and min(widths) > 0
    plots = page.execute_script(
        "return Array.from(document.querySelectorAll('.svg-row svg')).map(s => s.getBoundingClientRect().width)"
    )
    assert plots and min(plots) > 0  # the curves (and range tests) drawn
    assert page.find_element("id", "per-class").is_displayed()


@needs_browser
def test_sorting_a_column_reorders_the_per_class_table(reports, browser):
    from selenium.webdriver.common.by import By

    page = _open(browser, reports["multi_label"])
    table = page.find_element(By.ID, "per-class")
    headers = [th.text for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    column = headers.index("test AP")

    def values():
        cells = table.find_elements(By.CSS_SELECTOR, f"tbody tr td:nth-child({column + 1})")
        return [float(c.text) for c in cells]

    table.find_elements(By.CSS_SELECTOR, "thead th")[column].click()
    assert values() == sorted(values())
    table.find_elements(By.CSS_SELECTOR, "thead th")[column].click()
    assert values() == sorted(values(), reverse=True)


@needs_browser
def test_the_class_filter_hides_the_other_classes(reports, browser):
    from selenium.webdriver.common.by import By

    page = _open(browser, reports["multi_label"])
    page.find_element(By.ID, "class-filter").send_keys("Comedy")
    shown = [
        r.get_attribute("data-class")
        for r in page.find_elements(By.CSS_SELECTOR, "#per-class tbody tr")
        if r.is_displayed()
    ]
    sections = [
        s.get_attribute("data-class")
        for s in page.find_elements(By.CSS_SELECTOR, "section.class-errors")
        if s.is_displayed()
    ]
    assert shown == ["Comedy"] and sections == ["Comedy"]


@needs_browser
@pytest.mark.parametrize("task", ["multi_label", "single_label"])
def test_a_class_is_one_click_from_the_images_it_is_wrongly_given_each_shown_as_the_id_it_names(
    reports, browser, task
):
    """'Which images does the model call this class that are not?': click the class, read its first list."""
    from selenium.webdriver.common.by import By

    page = _open(browser, reports[task])
    first = page.find_element(By.CSS_SELECTOR, "#per-class tbody tr")
    name = first.get_attribute("data-class")
    first.find_element(By.TAG_NAME, "a").click()
    section = page.find_element(By.ID, f"errors-{name}")
    assert page.execute_script("return location.hash") == f"#errors-{name}"
    figures = section.find_elements(By.CSS_SELECTOR, ".gallery")[0].find_elements(By.TAG_NAME, "figure")
    images = _split_images(Path(reports[task]), task)
    for figure in figures:
        labels = figure.find_element(By.CSS_SELECTOR, "figcaption span").text.split(", ")
        assert name not in labels  # called that class, but does not have it
        shown = _decoded(figure.find_element(By.TAG_NAME, "img").get_attribute("src"))
        distances = {i: np.abs(shown - _resized(p, shown.shape[:2])).mean() for i, p in images.items()}
        assert min(distances, key=distances.get) == figure.get_attribute("data-id")  # the image it names


def _split_images(exp_dir: Path, task: str) -> dict[str, Path]:
    """The test split's images by id."""
    if task == "multi_label":  # <folder>/experiments/<name>; <folder>/data/Images/<id>.jpg
        return {p.stem: p for p in (exp_dir.parents[1] / "data" / "Images").glob("*.jpg")}
    test = exp_dir.parents[1] / "single" / "test"  # <base>/experiments/<name>; a folder per class
    return {f"{p.parent.name}/{p.name}": p for p in test.glob("*/*.png")}


def _resized(path: Path, size: tuple[int, int]) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB").resize(size[::-1], Image.Resampling.LANCZOS), dtype=float)


@needs_browser
def test_python_m_mlic_report_rewrites_the_page_of_a_finished_experiment(reports, tmp_path):
    exp_dir = reports["multi_label"]  # <folder>/experiments/html_tiny, trained from <folder>/config.py
    before = (exp_dir / "report.html").read_text()
    (exp_dir / "report.html").unlink()
    folder = exp_dir.parents[1]
    env = dict(os.environ, ROOT_PATH=str(folder / "data"))
    result = subprocess.run(
        [sys.executable, "-m", "mlic.report", str(exp_dir)],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout
    again = (exp_dir / "report.html").read_text()
    # the same best model evaluated again: the same errors, the same thumbnails
    assert again.count("<figure") == before.count("<figure") > 0


@needs_browser
def test_compare_html_links_each_experiment_to_its_report(reports, browser, tmp_path):
    from selenium.webdriver.common.by import By

    from mlic.evaluate.compare import main

    assert main([*(str(p) for p in reports.values()), "--out", str(tmp_path), "--html"]) == 0
    browser.get((tmp_path / "compare.html").as_uri())
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
    links = browser.find_elements(By.CSS_SELECTOR, "#compare tbody td:first-child a")
    assert sorted(a.text for a in links) == sorted(p.name for p in reports.values())
    target = links[0].text
    links[0].click()
    assert browser.title.startswith(f"{target}:")  # its own report.html opened


@needs_browser
def test_the_segmentation_page_shows_each_worst_image_with_its_true_and_predicted_masks(reports, browser):
    from selenium.webdriver.common.by import By

    page = _open(browser, reports["segmentation"])
    true = page.find_elements(By.CSS_SELECTOR, 'img[alt$="(true mask)"]')
    predicted = page.find_elements(By.CSS_SELECTOR, 'img[alt$="(predicted mask)"]')
    assert len(true) == len(predicted) == 4  # the test split's 4 images, lowest IoU first
    assert [t.get_attribute("alt").split(" ")[0] for t in true] == [
        p.get_attribute("alt").split(" ")[0] for p in predicted
    ]
    assert all(page.execute_script("return arguments[0].naturalWidth", img) > 0 for img in true + predicted)


@needs_browser
def test_the_label_audit_shows_each_suspect_label_as_the_image_it_names_and_follows_the_class_filter(
    reports, browser, tmp_path, monkeypatch
):
    """`python -m mlic.audit` on a trained experiment: its section in the page, a thumbnail per row that
    is the image of that id, and the class filter applies to it."""
    from selenium.webdriver.common.by import By

    from mlic.train.audit import main

    folder = tmp_path / "copy"  # the audit rewrites the page: the other tests keep theirs
    shutil.copytree(reports["multi_label"].parents[1], folder)
    monkeypatch.chdir(folder)
    monkeypatch.setenv("ROOT_PATH", str(folder / "data"))
    assert main(["experiments/html_tiny", "--folds", "0"]) == 0
    exp_dir = folder / "experiments" / "html_tiny"
    page = _open(browser, exp_dir)
    assert [e for e in page.get_log("browser") if e["level"] == "SEVERE"] == []
    section = page.find_element(By.ID, "label-audit")
    assert section.is_displayed()
    figures = page.find_elements(By.CSS_SELECTOR, "section.audit figure")
    assert figures
    images = {p.stem: p for p in (folder / "data" / "Images").glob("*.jpg")}
    for figure in figures:
        shown = _decoded(figure.find_element(By.TAG_NAME, "img").get_attribute("src"))
        distances = {i: np.abs(shown - _resized(p, shown.shape[:2])).mean() for i, p in images.items()}
        assert min(distances, key=distances.get) == figure.get_attribute("data-id")
    wanted = figures[0].get_attribute("data-class")
    page.find_element(By.ID, "class-filter").send_keys(wanted)
    shown_classes = {f.get_attribute("data-class") for f in figures if f.is_displayed()}
    assert shown_classes == {wanted}
