#!/usr/bin/env bash
# The steps of dags/bash.yml. Usage: steps.sh prepare | square N | report
set -euo pipefail
case "${1:-}" in
  prepare)
    echo "preparing in $(pwd), task ${MLCOMP_TASK_ID:-?} attempt ${MLCOMP_ATTEMPT:-?}"
    ;;
  square)
    n="${2:?square needs a number}"
    echo "$n squared is $((n * n))"
    ;;
  report)
    echo "every square is done"
    ;;
  *)
    echo "usage: steps.sh prepare | square N | report" >&2
    exit 2
    ;;
esac
