from labelaudit._entry import run

if __name__ == "__main__":
    run()
