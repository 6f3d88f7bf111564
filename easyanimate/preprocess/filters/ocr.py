"""Text (OCR): the fraction of the middle frame covered by detected text.

Backends: tesseract (Debian's tesseract-ocr through pytesseract; offline, CPU) and easyocr (upstream's choice;
weights from a local folder). easyocr needs torchvision, which cannot load with our CPU torch, so it is an
optional extra for GPU machines, never in requirements.txt.
"""

from __future__ import annotations

import numpy as np

from ..config import OCRFilter
from .frames import sample_frames


def text_area_tesseract(frame: np.ndarray, min_confidence: float) -> float:
    try:
        import pytesseract
    except ImportError as err:
        raise ImportError("the tesseract OCR backend needs pytesseract and Debian's tesseract-ocr") from err
    data = pytesseract.image_to_data(frame, output_type=pytesseract.Output.DICT)
    h, w = frame.shape[:2]
    mask = np.zeros((h, w), bool)
    for text, conf, x, y, bw, bh in zip(
        data["text"], data["conf"], data["left"], data["top"], data["width"], data["height"]
    ):
        if text.strip() and float(conf) >= min_confidence:
            mask[y : y + bh, x : x + bw] = True
    return float(mask.mean())


class EasyOCRBackend:
    def __init__(self, models: str | None):
        try:
            import easyocr
        except ImportError as err:
            raise ImportError(
                "the easyocr backend needs `pip install easyocr` (it brings torchvision: GPU machines only) "
                "and its weights in a local folder (ocr.easyocr_models); use ocr.backend=tesseract here"
            ) from err
        self.reader = easyocr.Reader(["en"], model_storage_directory=models, download_enabled=False)

    def __call__(self, frame: np.ndarray, min_confidence: float) -> float:
        h, w = frame.shape[:2]
        mask = np.zeros((h, w), bool)
        for box, _, conf in self.reader.readtext(frame):
            if conf * 100 >= min_confidence:
                xs, ys = [int(p[0]) for p in box], [int(p[1]) for p in box]
                mask[max(0, min(ys)) : max(ys), max(0, min(xs)) : max(xs)] = True
        return float(mask.mean())


def ocr_filter(record: dict, cfg: OCRFilter, backend=None) -> tuple[bool, str | None]:
    middle = sample_frames(record["file_path_abs"], 3, record["num_frames"])[
        1 if record["num_frames"] > 2 else 0
    ]
    area = (
        backend(middle, cfg.min_confidence)
        if backend is not None
        else text_area_tesseract(middle, cfg.min_confidence)
    )
    record["text_area"] = round(area, 4)
    if area > cfg.max_text_area:
        return False, "ocr: text"
    return True, None
