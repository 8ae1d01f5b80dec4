# crossfid: the two commands are `make demo` and `make test`; each sets itself up.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The torch pin is installed before the project so that the resolver never pulls a
# multi-GB CUDA build by accident; on the project's build machines it is a local CPU wheel.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.crossfid-installed

.PHONY: demo test lint install perf clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(STAMP)

DEMO_MATERIALS ?= 24
DEMO_EPOCHS ?= 2
#: a quick density benchmark: 12 of the 65 bundled crystals, one per prototype family
DEMO_CRYSTALS ?= Cu-fcc,Al-fcc,Fe-bcc,W-bcc,Si-diamond,NaCl-rocksalt,MgO-rocksalt,GaAs-zincblende,ZnO-wurtzite,CaF2-fluorite,SrTiO3-perovskite,TiO2-rutile
DEMO_PAGE ?= leaderboard.html
DEMO_SCALING_FIGURE ?= scaling-law.png
DEMO_REPORT ?= demo-report

## demo: embedded database -> demo corpus (generated or reused) -> ingest -> curate on Dask -> freeze -> split
##       -> fit the r2SCAN AtomRef -> transferability report and figures
##       -> train methods 3, 4 and 1 briefly on CPU -> their test MAEs from the database
##       -> benchmark every model (the CHGNet base models, the fine-tunes and the SevenNet peers), print the
##       leaderboard, write the HTML page -> scaling law -> the study's report (HTML + Markdown)
demo: $(STAMP)
	$(BIN)/crossfid db init
	$(BIN)/crossfid ingest demo --materials $(DEMO_MATERIALS) --workers 2
	$(BIN)/crossfid sql "SELECT fidelity, count(DISTINCT material) AS materials, count(DISTINCT task) AS tasks, \
	    count(*) AS frames, round(avg(n_atoms), 1) AS mean_atoms FROM v_frames GROUP BY fidelity ORDER BY fidelity"
	$(BIN)/crossfid curate --fidelity r2SCAN --workers 2 --freeze demo-r2scan --energy-label uncorrected
	$(BIN)/crossfid dataset split demo-r2scan --ratios 8:1:1 --seed 0
	$(BIN)/crossfid atomref fit demo-r2scan@0 --fill-from chgnet-r2scan --prior chgnet-r2scan --prior-weight 100
	$(BIN)/crossfid analyze transferability --source GGA,GGA+U --target demo-r2scan@0
	$(BIN)/crossfid analyze importance --source GGA,GGA+U --target r2SCAN --top 8
	$(BIN)/crossfid train --split demo-r2scan@0 --method tl-frozen-atomref --epochs $(DEMO_EPOCHS) --batch-size 16
	$(BIN)/crossfid train --split demo-r2scan@0 --method tl-refit-atomref --epochs $(DEMO_EPOCHS) --batch-size 16
	$(BIN)/crossfid train --split demo-r2scan@0 --method scratch --epochs $(DEMO_EPOCHS) --batch-size 16
	$(BIN)/crossfid runs list
	$(BIN)/crossfid leaderboard refresh --split demo-r2scan@0 --crystals $(DEMO_CRYSTALS) --workers 2
	$(BIN)/crossfid leaderboard show
	$(BIN)/crossfid dataset split demo-r2scan --ratios 8:1:1 --seed 1 --subsets 40,80,160
	$(BIN)/crossfid benchmark scaling-law --split demo-r2scan@1 --method scratch --method tl-refit-atomref \
	    --sizes 40,80,160 --epochs $(DEMO_EPOCHS) --batch-size 16 --min-size 0 --out $(DEMO_SCALING_FIGURE)
	$(BIN)/crossfid leaderboard html $(DEMO_PAGE)
	$(BIN)/crossfid report study --split demo-r2scan@0 --out $(DEMO_REPORT)
	$(BIN)/crossfid db status

## test: the test suite against real PostgreSQL (embedded; plus CROSSFID_TEST_DATABASE_URL if set)
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check crossfid migrations tests perf
	$(BIN)/ruff format --check crossfid migrations tests perf

perf: $(STAMP)
	$(BIN)/python perf/bulk_insert.py
	$(BIN)/python perf/ingest.py
	$(BIN)/python perf/atomref.py
	$(BIN)/python perf/train.py

clean-venv:
	rm -rf $(VENV)
