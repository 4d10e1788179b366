"""The Atari environment names the ROM it loaded and warns when it is not the dataset's."""
import hashlib
import logging

import ale_py

from batch_rl.environments import atari


def md5_of(rom_id):
  with open(ale_py.roms.get_rom_path(rom_id), "rb") as f:
    return hashlib.md5(f.read()).hexdigest()


def test_table_covers_the_60_dqn_replay_games():
  names = {atari._rom_id_to_game(r) for r in atari.DATASET_ROM_MD5}
  for game in ("Pong", "Breakout", "MsPacman", "SpaceInvaders", "UpNDown", "Jamesbond",
               "MontezumaRevenge", "YarsRevenge", "Zaxxon", "Asterix"):
    assert game in names
  assert all(len(v) == 32 and int(v, 16) >= 0 for v in atari.DATASET_ROM_MD5.values())


def test_warning_only_when_the_rom_differs(caplog):
  with caplog.at_level(logging.WARNING):
    for game in ("Pong", "MsPacman"):
      env = atari.AtariEnvironment(game)
      assert env.rom_md5 == md5_of(env.rom_id)  # the file ale-py actually loads
      same = env.rom_md5 == atari.DATASET_ROM_MD5[env.rom_id]
      assert (env.rom_warning is None) == same
      if not same:
        assert env.rom_md5 in caplog.text and atari.DATASET_ROM_MD5[env.rom_id] in caplog.text
  assert atari.check_dataset_rom("pong", atari.DATASET_ROM_MD5["pong"]) is None
  assert "0" * 32 in atari.check_dataset_rom("pong", "0" * 32)
  assert "no reference MD5" in atari.check_dataset_rom("not_a_rom", "0" * 32)


def test_the_run_records_the_rom_md5_and_its_verdict(tmp_path):
  from batch_rl.environments import factory  # pylint: disable=g-import-not-at-top
  from batch_rl.environments import minatar  # pylint: disable=g-import-not-at-top
  pong = atari.AtariEnvironment("Pong")
  line = factory.describe_environment("atari:Pong", pong)
  assert md5_of("pong") in line and "recorded with" in line and "WARNING" not in line
  pacman = atari.AtariEnvironment("MsPacman")
  line = factory.describe_environment("atari:MsPacman", pacman)
  assert md5_of("ms_pacman") in line
  assert ("WARNING" in line) == (pacman.rom_warning is not None)
  assert factory.describe_environment(
      "minatar:breakout", minatar.MinAtarEnvironment("breakout")) == "minatar:breakout"
