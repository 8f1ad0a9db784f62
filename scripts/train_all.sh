#!/usr/bin/env bash
# Train the whole embedded cascade into RUN (default runs/main), one stage after another.
# Usage: scripts/train_all.sh [RUN] [BASE_MINUTES] [SR1_MINUTES] [SR2_MINUTES]
# Re-running resumes every stage from its last checkpoint and trains it for the given minutes more.
set -euo pipefail
RUN=${1:-runs/main}
BASE_MIN=${2:-60}
SR1_MIN=${3:-45}
SR2_MIN=${4:-50}
SYNONYMS=${SYNONYMS:-0.3}  # base captions say each phrase in other words with this probability
THREADS=${THREADS:-2}  # use 1 while the machine does other work: 2 threads on a busy 2-core box crawl
# More options for every stage, e.g. on a GPU machine: EXTRA="--workers 14 --batch-size 256 --lr 3e-4"
EXTRA=${EXTRA:-}
# shellcheck disable=SC2086
unitune-nb --threads "$THREADS" train --stage sr1 --out "$RUN" --minutes "$SR1_MIN" --resume $EXTRA
# shellcheck disable=SC2086
unitune-nb --threads "$THREADS" train --stage sr2 --out "$RUN" --minutes "$SR2_MIN" --resume $EXTRA
# shellcheck disable=SC2086
unitune-nb --threads "$THREADS" train --stage base --out "$RUN" --minutes "$BASE_MIN" --resume --synonyms "$SYNONYMS" $EXTRA
