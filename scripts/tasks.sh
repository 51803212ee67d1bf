# The tasks the background scripts work on, named once (sourced by teachers.sh, background.sh and realtime.sh)
FIRST_TASKS="walker-walk cheetah-run"     # the first shipped teachers
NEW_TASKS="walker-run cartpole-swingup"   # issue 30's teachers, trained by scripts/teachers.sh
