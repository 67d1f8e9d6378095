"""Instance masks without hand-made annotations: torchvision's COCO Mask R-CNN as a mask maker.

:class:`MaskDetector` runs ``maskrcnn_resnet50_fpn`` (or the ``_v2`` model, recognised from a local
state dict's keys) on uint8 RGB images and returns binary masks of the instances of the requested
COCO categories, largest first. Used by the instance datasets' ``--auto_masks`` (masks made at
load time, see :class:`LazyMaskDetector`) and by ``datasets/make_auto_masks.py`` (masks written
once in InstaGAN's ``<id>_<k>.png`` layout, to inspect, fix and train on).

Weights: torchvision's COCO weights (``MaskRCNN_ResNet50_FPN_Weights.DEFAULT``, downloaded once to
torch's hub cache; needs the internet), or a local state dict (``model_path``; e.g. that file,
downloaded elsewhere, or a fine-tuned model saved with ``torch.save(model.state_dict(), path)``).
"""
import os

import numpy as np
import torch

from data.image_folder import min_area_pixels
from util import checkpoint
from util.errors import UserInputError

#: The 91 labels of torchvision's COCO detection models (index = label id; 'N/A' = unused id),
#: kept here so category names work offline with a local state dict.
COCO_CATEGORIES = (
    '__background__', 'person', 'bicycle', 'car', 'motorcycle', 'airplane', 'bus', 'train', 'truck', 'boat',
    'traffic light', 'fire hydrant', 'N/A', 'stop sign', 'parking meter', 'bench', 'bird', 'cat', 'dog', 'horse',
    'sheep', 'cow', 'elephant', 'bear', 'zebra', 'giraffe', 'N/A', 'backpack', 'umbrella', 'N/A', 'N/A',
    'handbag', 'tie', 'suitcase', 'frisbee', 'skis', 'snowboard', 'sports ball', 'kite', 'baseball bat',
    'baseball glove', 'skateboard', 'surfboard', 'tennis racket', 'bottle', 'N/A', 'wine glass', 'cup', 'fork',
    'knife', 'spoon', 'bowl', 'banana', 'apple', 'sandwich', 'orange', 'broccoli', 'carrot', 'hot dog', 'pizza',
    'donut', 'cake', 'chair', 'couch', 'potted plant', 'bed', 'N/A', 'dining table', 'N/A', 'N/A', 'toilet', 'N/A',
    'tv', 'laptop', 'mouse', 'remote', 'keyboard', 'cell phone', 'microwave', 'oven', 'toaster', 'sink',
    'refrigerator', 'N/A', 'book', 'clock', 'vase', 'scissors', 'teddy bear', 'hair drier', 'toothbrush')



def category_ids(names, num_classes=len(COCO_CATEGORIES)):
    """Label ids of category ``names`` (COCO names, or label ids given as integers / digit strings).

    Names need the 91-label COCO models; a model with another number of classes takes ids in
    ``[1, num_classes)``. Unknown names raise UserInputError listing the valid ones.
    """
    valid = sorted({c for c in COCO_CATEGORIES[1:] if c != 'N/A'})
    ids = []
    for name in names:
        name = str(name).strip()
        if name.isdigit():
            i = int(name)
            if not 1 <= i < num_classes:
                raise UserInputError(f"Mask category id {i} is out of range: the detector has label ids "
                                     f"1..{num_classes - 1}.")
        elif num_classes == len(COCO_CATEGORIES) and name in valid:
            i = COCO_CATEGORIES.index(name)
        elif num_classes != len(COCO_CATEGORIES):
            raise UserInputError(f"Mask category '{name}': the detector has {num_classes} classes, not COCO's "
                                 f"{len(COCO_CATEGORIES)}, so give its label ids (1..{num_classes - 1}) instead "
                                 f"of names.")
        else:
            raise UserInputError(f"Unknown mask category '{name}'. Valid COCO categories: {', '.join(valid)}.")
        if i not in ids:
            ids.append(i)
    return ids


def parse_categories(spec, domains=('A', 'B')):
    """``--mask_categories`` -> ``{domain: [names]}``.

    ``'person'`` or ``'sheep,giraffe'``: the same list for every domain; ``'A:sheep;B:giraffe'``:
    one list per domain (each may hold several names: ``'A:sheep,cow;B:giraffe'``). Every domain
    of ``domains`` needs a non-empty list; names are checked by :func:`category_ids`.
    """
    if not spec or not str(spec).strip():
        raise UserInputError("--auto_masks needs --mask_categories: the COCO categories to detect, e.g. "
                             "'person', 'sheep,giraffe' (both domains) or 'A:sheep;B:giraffe' (per domain).")
    spec = str(spec).strip()
    if ':' not in spec:
        names = [n.strip() for n in spec.split(',') if n.strip()]
        out = {d: list(names) for d in domains}
    else:
        out = {}
        for part in filter(None, (p.strip() for p in spec.split(';'))):
            d, sep, names = part.partition(':')
            d = d.strip()
            if not sep or d not in ('A', 'B'):
                raise UserInputError(f"--mask_categories '{spec}': '{part}' is not '<domain>:<names>' with "
                                     f"domain A or B; write e.g. 'A:sheep;B:giraffe', or 'person' for both.")
            if d in out:
                raise UserInputError(f"--mask_categories '{spec}' gives domain {d} twice.")
            out[d] = [n.strip() for n in names.split(',') if n.strip()]
    for d in domains:
        if not out.get(d):
            raise UserInputError(f"--mask_categories '{spec}' gives no category for domain {d}; write e.g. "
                                 f"'A:sheep;B:giraffe', or one list such as 'person' for both domains.")
        category_ids(out[d])  # unknown names fail now, before any model is built
    return {d: out[d] for d in domains}


def select_instances(output, label_ids, score_thresh=0.5, min_area_px=1, mask_thresh=0.5, max_instances=20):
    """Keep the wanted detections of one image as binary masks, largest first.

    ``output``: torchvision's detection dict for one image: ``'labels'`` (N,) int64, ``'scores'``
    (N,) in [0, 1], ``'masks'`` (N, 1, H, W) soft masks in [0, 1]. A detection is kept when its
    label is in ``label_ids``, its score >= ``score_thresh`` and its binary mask (soft mask >
    ``mask_thresh``) has at least ``max(1, min_area_px)`` pixels. Returns a bool array (K, H, W),
    K <= ``max_instances``, by decreasing area (equal areas: by decreasing score).
    """
    labels, scores, soft = output['labels'], output['scores'], output['masks']
    keep = torch.isin(labels, torch.as_tensor(label_ids, device=labels.device)) & (scores >= score_thresh)
    order = torch.argsort(scores[keep], descending=True, stable=True)
    masks = soft[keep][order, 0] > mask_thresh                                    # (K, H, W) bool
    areas = masks.flatten(1).sum(1)
    masks, areas = masks[areas >= max(1, min_area_px)], areas[areas >= max(1, min_area_px)]
    order = torch.argsort(areas, descending=True, stable=True)[:max_instances]
    return masks[order].cpu().numpy()


def _restrict_labels(postprocess, label_ids):
    """Wrap ``RoIHeads.postprocess_detections`` to drop other labels before the mask head runs.

    The mask head treats each detection on its own, so the kept masks are unchanged; only the
    work on unwanted detections is saved.
    """
    def postprocess_detections(*args, **kwargs):
        boxes, scores, labels = postprocess(*args, **kwargs)
        keep = [torch.isin(lab, torch.as_tensor(label_ids, device=lab.device)) for lab in labels]
        return ([b[k] for b, k in zip(boxes, keep)], [s[k] for s, k in zip(scores, keep)],
                [lab[k] for lab, k in zip(labels, keep)])
    return postprocess_detections


def load_state_dict_file(path):
    """A Mask R-CNN state dict from ``path`` (read by :func:`util.checkpoint.load`; a ``{'model': ...}``
    training checkpoint and DataParallel ``module.`` prefixes are accepted); UserInputError naming it."""
    fix = "pass a torchvision Mask R-CNN state dict, saved with torch.save(model.state_dict(), path)"
    sd = checkpoint.load(path, what='Mask R-CNN weights file',
                         hint=f"Check the path, or {fix} (e.g. maskrcnn_resnet50_fpn_coco-bf2d0c1e.pth).")
    if isinstance(sd, dict) and isinstance(sd.get('model'), dict):
        sd = sd['model']
    if not checkpoint.is_state_dict(sd):
        raise UserInputError(f"Mask R-CNN weights file '{path}' does not hold a state dict (a dict of tensors); "
                             f"{fix}.")
    return {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}


class MaskDetector:
    """Binary instance masks of chosen COCO categories from torchvision's Mask R-CNN (ResNet-50-FPN).

    ``categories``: COCO names (e.g. ``['person']``) or label ids; ``score_thresh``: minimum
    detection score; ``min_area``: minimum mask area, a fraction of the image (< 1) or pixels
    (>= 1); ``mask_thresh``: threshold of the soft masks; ``model_path``: a local state dict (None:
    download torchvision's COCO weights); ``max_instances``: masks returned per image at most;
    ``min_size`` / ``max_size``: the detector's resizing of its input (torchvision's defaults 800 /
    1333; smaller is faster and finds fewer small instances); ``model_kwargs`` go to the
    torchvision constructor (e.g. ``box_detections_per_img``). The model runs in eval mode, without
    gradients, on ``device``.
    """

    def __init__(self, categories, score_thresh=0.5, min_area=0.001, mask_thresh=0.5, model_path=None,
                 device='cpu', max_instances=20, min_size=800, max_size=1333, **model_kwargs):
        from torchvision.models import detection
        if isinstance(categories, str):
            categories = [c for c in categories.split(',') if c.strip()]
        self.score_thresh, self.min_area, self.mask_thresh = score_thresh, min_area, mask_thresh
        self.max_instances, self.device = max_instances, torch.device(device)
        self.categories = list(categories)
        if model_path is None:
            category_ids(self.categories)  # unknown names fail before the download
            sd = self._download_weights(detection.MaskRCNN_ResNet50_FPN_Weights.DEFAULT)
            source = 'the downloaded COCO weights'
        else:
            sd = load_state_dict_file(model_path)
            source = f"Mask R-CNN weights file '{model_path}'"
        # the v1 box head has fc6/fc7 layers, v2 a conv stack; the class count is that of the box predictor
        v2 = not any(k.startswith('roi_heads.box_head.fc6.') for k in sd)
        cls = sd.get('roi_heads.box_predictor.cls_score.weight')
        num_classes = cls.shape[0] if cls is not None else len(COCO_CATEGORIES)
        self.label_ids = category_ids(self.categories, num_classes)
        build = detection.maskrcnn_resnet50_fpn_v2 if v2 else detection.maskrcnn_resnet50_fpn
        model = build(weights=None, weights_backbone=None, num_classes=num_classes, min_size=min_size,
                      max_size=max_size, box_score_thresh=score_thresh, **model_kwargs)
        self._load(model, sd, source)
        model.roi_heads.postprocess_detections = _restrict_labels(model.roi_heads.postprocess_detections,
                                                                  self.label_ids)
        self.model = model.eval().requires_grad_(False).to(self.device)

    @staticmethod
    def _download_weights(weights):
        try:
            return weights.get_state_dict(progress=False, check_hash=True)
        except Exception as e:  # noqa: BLE001 - URLError, HTTPError, hash mismatch, disk full...
            cache = os.path.join(torch.hub.get_dir(), 'checkpoints')
            raise UserInputError(f"Could not download the Mask R-CNN COCO weights from {weights.url} "
                                 f"({type(e).__name__}: {e}). Download that file on a machine with internet "
                                 f"access and pass it with --mask_model_path (datasets/make_auto_masks.py: "
                                 f"--model_path), or put it in torch's cache folder '{cache}'.") from None

    @staticmethod
    def _load(model, sd, source):
        """Strict load; BatchNorm's ``num_batches_tracked`` (absent from torchvision's COCO files, whose
        model uses frozen batch norm) is filled in. A mismatch names ``source``."""
        sd = dict(sd)
        for k, v in model.state_dict().items():
            if k.endswith('num_batches_tracked') and k not in sd:
                sd[k] = torch.zeros_like(v)
        try:
            model.load_state_dict(sd, strict=True)
        except RuntimeError as e:
            missing = [k for k in model.state_dict() if k not in sd]
            unexpected = [k for k in sd if k not in model.state_dict()]
            detail = (f"missing keys {missing[:3]}, unexpected keys {unexpected[:3]}" if missing or unexpected
                      else str(e).splitlines()[-1].strip())
            raise UserInputError(f"{source} is not a state dict of torchvision's maskrcnn_resnet50_fpn (or _v2) "
                                 f"({detail}); pass the COCO weights file or a state dict of that model.") from None

    @torch.no_grad()
    def detect_batch(self, images, categories=None):
        """Masks of several images in one forward pass.

        ``images``: list of uint8 RGB arrays (H_i, W_i, 3); ``categories``: a subset of the
        detector's categories to keep (None: all of them). Returns a list of bool arrays (K_i, H_i, W_i).
        """
        ids = self.label_ids if categories is None else category_ids(categories, self._num_classes())
        if not set(ids) <= set(self.label_ids):
            raise ValueError(f'categories {categories} are not among the detector\'s {self.categories}')
        tensors = []
        for image in images:
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f'expected a uint8 RGB array (H, W, 3), got {image.dtype} {image.shape}')
            tensors.append(torch.tensor(image, device=self.device).permute(2, 0, 1).float().div_(255))
        outputs = self.model(tensors) if tensors else []
        min_px = [min_area_pixels(self.min_area, im.shape[:2]) for im in images]
        return [select_instances(out, ids, self.score_thresh, px, self.mask_thresh, self.max_instances)
                for out, px in zip(outputs, min_px)]

    def detect(self, image, categories=None):
        """Masks of one image: uint8 RGB (H, W, 3) -> bool (K, H, W), largest first, K <= max_instances."""
        return self.detect_batch([image], categories)[0]

    def _num_classes(self):
        return self.model.roi_heads.box_predictor.cls_score.out_features


class LazyMaskDetector:
    """One :class:`MaskDetector` per process, built on first use, for the masks of several domains.

    ``categories``: ``{domain: [names]}`` (see :func:`parse_categories`); the detector looks for
    all of them at once and :meth:`detect` keeps the domain's own. ``detector_kwargs`` go to
    :class:`MaskDetector`. Pickling (DataLoader workers started by 'spawn') leaves the built model
    behind, so each worker builds its own.
    """

    def __init__(self, categories, **detector_kwargs):
        self.categories = {d: list(names) for d, names in categories.items()}
        self.kwargs = detector_kwargs
        self._detector = None

    def detector(self):
        if self._detector is None:
            union = list(dict.fromkeys(n for names in self.categories.values() for n in names))
            self._detector = MaskDetector(union, **self.kwargs)
        return self._detector

    def detect(self, image, domain):
        """uint8 RGB (H, W, 3) of ``domain`` -> bool masks (K, H, W) of its categories, largest first."""
        return self.detector().detect(image, self.categories[domain])

    def __getstate__(self):
        return dict(self.__dict__, _detector=None)
