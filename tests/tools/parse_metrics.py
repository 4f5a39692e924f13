"""Parse OpenMetrics text (stdin) with the Prometheus client's own parser, which refuses text
that breaks the format. Prints a JSON object: "name{label="value",...}" -> value, labels sorted.

Usage: parse_metrics.py < metrics.txt
"""

from __future__ import annotations

import json
import sys

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def main() -> int:
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(sys.stdin.read()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    print(json.dumps(samples))
    return 0


if __name__ == "__main__":
    sys.exit(main())
