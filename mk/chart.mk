# Helm chart (charts/parsl-flux): `make chart` lints and render-checks it here;
# with helm on PATH it also runs helm lint and compares helm template output
# with the committed examples (what .github/workflows/chart.yml does).

CHART_DIR := charts/parsl-flux
HELM ?= helm

.PHONY: chart chart-examples

chart: $(STAMP)  ## lint + render checks of the Helm chart (helm lint/template too when helm is on PATH)
	$(PY) -m yamllint --strict -c $(CHART_DIR)/.yamllint $(CHART_DIR) .github/workflows/chart.yml
	$(PY) -m check_jsonschema --check-metaschema $(CHART_DIR)/values.schema.json
	$(PY) -m check_jsonschema --schemafile $(CHART_DIR)/values.schema.json $(CHART_DIR)/values.yaml
	$(PY) tests/chart_examples.py validate $(filter-out %.values.yaml,$(wildcard $(CHART_DIR)/examples/*.yaml))
	$(PY) -m pytest -q tests/test_chart.py
	@if command -v $(HELM) >/dev/null 2>&1; then \
	  set -e; \
	  $(HELM) lint --strict $(CHART_DIR); \
	  for values in $(CHART_DIR)/examples/*.values.yaml; do $(HELM) lint --strict $(CHART_DIR) -f $$values; done; \
	  HELM=$(HELM) $(PY) tests/chart_examples.py check; \
	else \
	  echo "chart: $(HELM) not on PATH; skipped helm lint/template (the committed examples were checked instead)"; \
	fi

chart-examples: $(STAMP)  ## re-render charts/parsl-flux/examples/*.yaml with helm (after changing the chart)
	HELM=$(HELM) $(PY) tests/chart_examples.py regenerate
