# Sourced by test.sh: the run's steps, what each needs, and the summary at the end.
#
# Outside CI, a step whose needs this machine cannot meet (no root or apt-get to install
# with, a database server that is not there) is recorded as skipped, with why, and the
# run goes on without what depends on it. Under CI=true (.ci/run) nothing is optional:
# a missing piece fails the run, as it must on the machine the project is released from.
# Either way the summary says what ran, what failed and what was skipped, and why.

SUMMARY=()  # "RESULT<TAB>WHAT<TAB>WHY" lines: passed, failed or skipped
WHY=""  # why the last step that failed failed (its last line on stderr)
FAILED=0

under_ci() {
    [ "${CI:-}" = true ]
}

note() {
    SUMMARY+=("$1"$'\t'"$2"$'\t'"${3:-}")
}

# require WHAT COMMAND...: a set-up step that WHAT needs. When it fails, its last line
# on stderr says why: under CI the run stops; elsewhere WHAT is skipped and require
# returns 1, so that the caller leaves out what depends on it.
require() {
    local what=$1 errors status=0
    shift
    errors=$(mktemp)
    "$@" 2>"$errors" || status=$?
    cat "$errors" >&2
    WHY=$(grep -v '^[[:space:]]*$' "$errors" | tail -n 1 || true)
    rm -f "$errors"
    [ "$status" = 0 ] && return 0
    WHY=${WHY:-"$1 failed (exit status $status)"}
    if under_ci; then
        note failed "$what" "CI=true needs it: $WHY"
        echo "CI=true: $what cannot be left out: $WHY" >&2
        exit 1
    fi
    note skipped "$what" "$WHY"
    return 1
}

# check WHAT COMMAND...: a check of the project (ruff, a build, a test run). Its result
# goes into the summary; a failure fails the run at the end, after the other checks.
check() {
    local what=$1 status=0
    shift
    "$@" || status=$?
    if [ "$status" = 0 ]; then
        note passed "$what"
    else
        note failed "$what" "exit status $status"
        FAILED=1
    fi
}

# check_script SCRIPT WHAT: run `bash SCRIPT` as a check. A script that is missing is a
# failure under CI; elsewhere it is skipped, saying so.
check_script() {
    local script=$1 what=$2
    if [ ! -f "$script" ]; then
        if under_ci; then
            echo "CI=true, but $script is missing: $what cannot be checked" >&2
            note failed "$what ($script)" "$script is missing"
            FAILED=1
        else
            note skipped "$what ($script)" "$script is missing"
        fi
        return 0
    fi
    echo "== $what ($script)"
    check "$what ($script)" bash "$script"
}

print_summary() {
    local result line what why
    echo
    echo "== Summary$(under_ci && echo ' (CI=true: every step and cell required)')"
    for result in passed failed skipped; do
        for line in "${SUMMARY[@]}"; do
            IFS=$'\t' read -r _ what why <<<"$line"
            [ "${line%%$'\t'*}" = "$result" ] || continue
            printf '%-8s %s%s\n' "$result" "$what" "${why:+ — $why}"
        done
    done
    if [ "${#SUMMARY[@]}" = 0 ]; then
        echo "nothing ran: the set-up failed (see above)"
    fi
}
