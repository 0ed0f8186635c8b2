"""``python -m local2global.evaluation.vps``: see :func:`local2global.evaluation.vps.evaluate.main`."""

from local2global.evaluation.vps.evaluate import main

if __name__ == "__main__":  # pragma: no cover
    main()
