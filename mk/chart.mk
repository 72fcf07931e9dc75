# Helm chart (charts/parsl-flux): `make chart` runs Helm itself through the
# Helm SDK (helm-python-sdk, Helm v4.2.3 as a library, in the 'test' extra; no
# helm binary): helm lint --strict with the defaults and each
# examples/*.values.yaml, helm template compared with the committed examples,
# helm package; plus yamllint, the values schema, the examples against the
# Kubernetes schemas and the MiniCluster CRD, and tests/test_chart.py.
# .github/workflows/chart.yml runs the same, and the Helm CLI of that version.

CHART_DIR := charts/parsl-flux
CHART_PACKAGE_DIR := build/chart

.PHONY: chart chart-examples

chart: $(STAMP)  ## lint, render-check and package the Helm chart (Helm SDK; no helm binary needed)
	$(PY) -m yamllint --strict -c $(CHART_DIR)/.yamllint $(CHART_DIR) .github/workflows/chart.yml
	$(PY) -m check_jsonschema --check-metaschema $(CHART_DIR)/values.schema.json
	$(PY) -m check_jsonschema --schemafile $(CHART_DIR)/values.schema.json $(CHART_DIR)/values.yaml
	$(PY) tests/chart_examples.py lint
	$(PY) tests/chart_examples.py check
	$(PY) tests/chart_examples.py validate $(filter-out %.values.yaml,$(wildcard $(CHART_DIR)/examples/*.yaml))
	$(PY) tests/chart_examples.py package $(CHART_PACKAGE_DIR)
	$(PY) -m pytest -q tests/test_chart.py

chart-examples: $(STAMP)  ## re-render charts/parsl-flux/examples/*.yaml with Helm (after changing the chart)
	$(PY) tests/chart_examples.py regenerate
