#!/usr/bin/env bash
# Puts back what apply.sh saved: every sysctl's previous value, and the
# files it wrote under /etc (removed, or their previous content restored).
# Then it removes the state, so a second run finds nothing to do.
#
# Usage: tuning/restore.sh [--dry-run]
# Environment: as apply.sh (SWITCHBOARD_TUNING_STATE_DIR and the others).
#
# The login-session limits restored by removing the limits.d file apply to
# new sessions only, and a running switchboard keeps the limits it has.
set -euo pipefail

here=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR source=apply.sh
source "$here/apply.sh"

dry_run=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) dry_run=1 ;;
        -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
    shift
done
if [[ "$dry_run" == 1 ]]; then
    echo "dry run: nothing is changed"
else
    require_root
fi

if [[ ! -f "$TUNING_STATE_FILE" ]]; then
    echo "nothing to restore: no $TUNING_STATE_FILE (apply.sh has not run, or restore.sh already has)"
    exit 0
fi

while IFS=$'\t' read -r what name value; do
    [[ -n "$what" ]] || continue
    case "$what" in
        sysctl)
            if ! current=$(sysctl_read "$name"); then
                echo "skip     $name (absent now: its module is not loaded)"
                continue
            fi
            if [[ "$current" == "$value" ]]; then
                printf 'ok       %-36s %s\n' "$name" "$value"
            elif [[ "$dry_run" == 1 ]]; then
                printf 'would set %-35s %s -> %s\n' "$name" "$current" "$value"
            else
                sysctl_write "$name" "$value"
                printf 'set      %-36s %s -> %s\n' "$name" "$current" "$value"
            fi ;;
        file)
            if [[ "$value" == absent ]]; then
                if [[ ! -e "$name" ]]; then
                    echo "ok       $name is absent"
                elif [[ "$dry_run" == 1 ]]; then
                    echo "would remove $name"
                else
                    rm -f -- "$name"
                    echo "removed  $name"
                fi
            else
                backup=$TUNING_STATE_DIR/$value
                [[ -f "$backup" ]] || die "the saved copy of $name ($backup) is missing; restore it by hand"
                if [[ -f "$name" ]] && cmp -s -- "$backup" "$name"; then
                    echo "ok       $name is as before"
                elif [[ "$dry_run" == 1 ]]; then
                    echo "would put back $name from $backup"
                else
                    cp -p -- "$backup" "$name"
                    echo "restored $name"
                fi
            fi ;;
        *) die "unrecognised line in $TUNING_STATE_FILE: $what $name $value" ;;
    esac
done <"$TUNING_STATE_FILE"

if [[ "$dry_run" == 0 ]]; then
    # Copies of files first, then the state file last: if anything above
    # failed, the state is still there for another try.
    while IFS=$'\t' read -r what _ value; do
        if [[ "$what" == file && "$value" != absent ]]; then
            rm -f -- "${TUNING_STATE_DIR:?}/$value"
        fi
    done <"$TUNING_STATE_FILE"
    rm -f -- "$TUNING_STATE_FILE"
    rmdir -- "$TUNING_STATE_DIR" 2>/dev/null || true
    echo "restored; the state in $TUNING_STATE_DIR is removed"
fi
