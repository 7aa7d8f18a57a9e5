from hand_mqtt.cli import main

main()
