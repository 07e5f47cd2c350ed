"""`python -m procstart`: the side-by-side benchmark (`procstart.benchmark`), or, as
`python -m procstart run ...`, a program run with stdlib `multiprocessing` going through procstart
(`procstart._run`). Each imports only what it needs: `run` does not pay for the benchmark's imports.
"""

import sys

if __name__ == '__main__':
    if sys.argv[1:2] == ['run']:
        from procstart._run import main as run

        sys.exit(run(sys.argv[2:]))
    from procstart.benchmark import main

    sys.exit(main())
