# The two commands a new user needs: `make demo` and `make test`. Both install missing Debian
# packages first (scripts/bootstrap.sh), then build.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all bootstrap build demo test test-unit check clean

all: build

bootstrap:
	@./scripts/bootstrap.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS)

build: bootstrap $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

demo: build
	./scripts/demo.sh $(BUILD)

test: build
	cd $(BUILD) && ctest -j $(JOBS) --output-on-failure

test-unit: build
	cd $(BUILD) && ctest -j $(JOBS) -L unit --output-on-failure

# clang with thread-safety analysis as errors, plus ASan and UBSan, over unit and integration tests.
check: bootstrap
	CC=clang CXX=clang++ cmake -S . -B build-check -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DFEDGE_THREAD_SAFETY=ON -DFEDGE_SANITIZE=ON
	cmake --build build-check -j $(JOBS)
	cd build-check && ASAN_OPTIONS=detect_leaks=0 ctest -j $(JOBS) -L 'unit|integration' --output-on-failure

clean:
	rm -rf $(BUILD) build-check
