from otherworld.build import run

run()
