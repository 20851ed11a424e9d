"""Drift in the distribution of predicted labels: a chi-square test over windows."""

from __future__ import annotations

import math
from collections import Counter

from scipy import stats


class LabelShiftTest:
    """Chi-square test of the predicted-label distribution against a reference window.

    The first ``reference_size`` labels form the reference. After that, the labels are
    cut into consecutive, non-overlapping windows of ``window_size``. At the end of each
    window, a chi-square test of homogeneity compares the window's label counts with
    the reference's. An alarm needs both a p-value of at most ``alpha`` and a total
    variation distance of at least ``min_distance``. After an alarm, the window that
    raised it becomes the new reference.

    Non-overlapping windows keep the number of tests small, one per ``window_size``
    labels, so a stationary stream of n labels raises about
    ``n / window_size * alpha`` false alarms. The reference stays fixed until an alarm,
    so a slow shift adds up instead of being absorbed by a sliding reference. The
    distance threshold stops alarms on shifts that are significant but too small to act
    on, which large windows would otherwise report.

    Labels whose expected count is below ``min_expected`` in either window are pooled
    into one category, because the chi-square approximation is poor for small expected
    counts. With fewer than two categories left, no test runs.

    Parameters
    ----------
    reference_size
        Labels in the reference window.
    window_size
        Labels in each tested window.
    alpha
        Significance level of each test.
    min_distance
        Smallest total variation distance, in [0, 1], that raises an alarm.
    min_expected
        Expected count below which a label is pooled.
    """

    def __init__(
        self,
        reference_size: int = 500,
        window_size: int = 500,
        alpha: float = 0.001,
        min_distance: float = 0.1,
        min_expected: float = 5.0,
    ) -> None:
        if reference_size < 1 or window_size < 1:
            raise ValueError(f"reference_size and window_size must be positive, got {reference_size}, {window_size}")
        if not 0 < alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), got {alpha}")
        self.reference_size = reference_size
        self.window_size = window_size
        self.alpha = alpha
        self.min_distance = min_distance
        self.min_expected = min_expected

        self._reference: Counter[str] = Counter()
        self._window: Counter[str] = Counter()
        self._drift_detected = False
        self._n_updates = 0
        self._n_detections = 0
        self._p_value = math.nan
        self._distance = math.nan

    def update(self, label: str) -> LabelShiftTest:
        """Add one predicted label, then read :attr:`drift_detected`."""
        self._n_updates += 1
        self._drift_detected = False
        if self._reference.total() < self.reference_size:
            self._reference[label] += 1
            return self

        self._window[label] += 1
        if self._window.total() < self.window_size:
            return self

        self._p_value, self._distance = self._test()
        if self._p_value <= self.alpha and self._distance >= self.min_distance:
            self._drift_detected = True
            self._n_detections += 1
            self._reference = self._window
        self._window = Counter()
        return self

    def _test(self) -> tuple[float, float]:
        """Return the p-value and the total variation distance of the window against the reference."""
        reference_n = self._reference.total()
        window_n = self._window.total()
        labels = sorted(self._reference.keys() | self._window.keys())
        distance = 0.5 * sum(
            abs(self._reference[label] / reference_n - self._window[label] / window_n) for label in labels
        )

        # Expected counts under homogeneity: row total * column share. Pool sparse labels.
        total = reference_n + window_n
        smaller_row = min(reference_n, window_n)
        columns: list[tuple[int, int]] = []
        pooled = [0, 0]
        for label in labels:
            in_reference, in_window = self._reference[label], self._window[label]
            if (in_reference + in_window) * smaller_row / total < self.min_expected:
                pooled[0] += in_reference
                pooled[1] += in_window
            else:
                columns.append((in_reference, in_window))
        if sum(pooled):
            columns.append((pooled[0], pooled[1]))
        if len(columns) < 2:
            return 1.0, distance

        chi_square = 0.0
        for in_reference, in_window in columns:
            column_total = in_reference + in_window
            for observed, row_total in ((in_reference, reference_n), (in_window, window_n)):
                expected = row_total * column_total / total
                chi_square += (observed - expected) ** 2 / expected
        p_value = float(stats.chi2.sf(chi_square, df=len(columns) - 1))
        return p_value, distance

    @property
    def drift_detected(self) -> bool:
        """Whether the last call to :meth:`update` raised an alarm."""
        return self._drift_detected

    @property
    def n_updates(self) -> int:
        """Labels seen."""
        return self._n_updates

    @property
    def n_dropped(self) -> int:
        """Labels dropped: always 0, because every label is valid input. The monitor reads it from every detector."""
        return 0

    @property
    def n_detections(self) -> int:
        """Alarms raised so far."""
        return self._n_detections

    @property
    def p_value(self) -> float:
        """p-value of the last test, or nan before the first."""
        return self._p_value

    @property
    def distance(self) -> float:
        """Total variation distance of the last test, or nan before the first."""
        return self._distance

    @property
    def statistic_name(self) -> str:
        """Name of the figure that :attr:`statistic` returns."""
        return "total_variation"

    @property
    def statistic(self) -> float:
        """The figure reported with an alarm: :attr:`distance`."""
        return self._distance
