# The two commands of the README: `make demo` (the live demo on the local stack) and `make test`.
.PHONY: install stack test test-unit demo down bench

install:
	ops/install

stack: install
	ops/stack up

# the whole suite: installs, starts Kafka and Redis if they are not running (the fixtures do), runs pytest
test: install
	.venv/bin/python -m pytest

# pure unit tests only: no broker, seconds
test-unit:
	.venv/bin/python -m pytest -m "not broker"

demo: stack
	.venv/bin/health demo

down:
	ops/stack down
