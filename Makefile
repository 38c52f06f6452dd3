# The two commands a new user needs: `make demo` and `make test`. Both install missing Debian
# packages first (scripts/bootstrap.sh), then build.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all bootstrap build demo test test-unit check package clean

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

# The slow checks (scripts/check.sh), cheapest first: a 10 s run of each fuzzer, built in
# $(BUILD)/fuzz-build as `make test` does (reused when there); ThreadSanitizer over the tests
# labelled tsan, those free of torch and gRPC calls (build-tsan); and clang with
# -Werror=thread-safety, ASan and UBSan over everything, running the unit and integration tests
# (build-check). With FEDGE_CHECK_DEADLINE (epoch seconds, set by .ci/run) a stage that would not
# finish in time is skipped, saying so.
check: bootstrap
	BUILD=$(BUILD) JOBS=$(JOBS) ./scripts/check.sh

# The .deb packages fedge-edge, fedge-cloud and fedgectl (CPack, cmake/Packaging.cmake), into
# $(BUILD)/packages/. Builds only the three binaries, not the tests.
package: bootstrap $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS) --target fedge-cloud fedge-edge fedgectl
	cd $(BUILD) && cpack -G DEB -B $(abspath $(BUILD))/packages

clean:
	rm -rf $(BUILD) build-check build-tsan
