"""Label statistics of the HPA Single-Cell Image Classification training set (2021).

Counted once from the 21,806 ``ID,Label`` rows of the competition's ``train.csv``
(``hpa2021-all-train-labels.csv``) and embedded here, so the package never needs that
file at runtime. Used to draw realistic synthetic label sets and as a reference for
class weights.
"""

from __future__ import annotations

#: Number of fields in the HPA 2021 training set.
HPA2021_N_FIELDS: int = 21_806

#: Fields carrying each class (index = HPA 2021 class id, 0 Nucleoplasm .. 18 Negative).
HPA2021_CLASS_COUNTS: tuple[int, ...] = (
    8797,  # 0 Nucleoplasm
    1095,  # 1 Nuclear membrane
    2451,  # 2 Nucleoli
    1262,  # 3 Nucleoli fibrillar center
    1425,  # 4 Nuclear speckles
    1792,  # 5 Nuclear bodies
    775,  # 6 Endoplasmic reticulum
    1846,  # 7 Golgi apparatus
    964,  # 8 Intermediate filaments
    1011,  # 9 Actin filaments
    818,  # 10 Microtubules
    78,  # 11 Mitotic spindle
    1734,  # 12 Centrosome
    3216,  # 13 Plasma membrane
    2013,  # 14 Mitochondria
    252,  # 15 Aggresome
    5685,  # 16 Cytosol
    621,  # 17 Vesicles and punctate cytosolic patterns
    34,  # 18 Negative
)

#: Fields with exactly k labels, k = 1..5 (index 0 = one label).
HPA2021_LABELS_PER_FIELD: tuple[int, ...] = (10_412, 8_928, 2_266, 197, 3)

#: Class id of "Negative"; in the real data it is never combined with another class.
NEGATIVE: int = 18
