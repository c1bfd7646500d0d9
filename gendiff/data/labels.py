"""Class labels of a dataset, and the (image, label) view a class-conditional run trains on.

A dataset has classes when it carries ``classes`` (the names) and ``labels`` (a LongTensor, one
label per index): the digits (0–9), an image folder whose images lie in class sub-folders
(torchvision's ImageFolder layout) and an LSUN category (one class).
"""
from __future__ import annotations

import torch


def class_labels(dataset) -> tuple[list[str], torch.Tensor]:
    """(class names, label per index) of ``dataset``, or a ValueError saying it has none."""
    classes, labels = getattr(dataset, "classes", None), getattr(dataset, "labels", None)
    if classes is None or labels is None:
        raise ValueError(f"{type(dataset).__name__} has no class labels: a class-conditional run needs the "
                         "digits, an image folder with one sub-folder per class (root/<class>/image.png) or "
                         "an LSUN category")
    return list(classes), torch.as_tensor(labels, dtype=torch.long)


class Labelled(torch.utils.data.Dataset):
    """``dataset``'s items as (image, class label) pairs; ``classes`` its class names.

    The label is that of the image actually returned: a dataset that skips unreadable records
    (``read(index) -> (index read, image)``) gives the next good image with its own label.
    """

    def __init__(self, dataset):
        self.dataset = dataset
        self.classes, self.labels = class_labels(dataset)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        read = getattr(self.dataset, "read", None)
        i, x = read(index) if read is not None else (index, self.dataset[index])
        return x, self.labels[i]
